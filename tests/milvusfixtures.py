"""Fixtures for real Milvus: a standalone Milvus 2.3 server (the ``milvus`` PyPI package's ``milvus-server``, an
embedded etcd + rocksmq + all coordinators in one process) started once per test run, and a milvus-lite database
file per test. Nothing is skipped: if Milvus cannot start, the tests that need it fail.

``milvus-server`` ignores SIGTERM: it is stopped with SIGINT (SIGKILL after a grace period). Its etcd listens on
fixed ports (2379/2380), so one server per machine: the fixture holds ``/tmp/facerec-milvus-test.lock`` while its
server runs (a second test run waits).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

LOCK = "/tmp/facerec-milvus-test.lock"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class MilvusServer:
    """A ``milvus-server`` process on a temporary data dir; :meth:`kill` / :meth:`start` for fault tests."""

    def __init__(self, data: Path, port: int) -> None:
        self.data = data
        self.port = port
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 90.0) -> None:
        exe = shutil.which("milvus-server") or str(Path(sys.executable).parent / "milvus-server")
        log = open(self.data.parent / "milvus-server.log", "ab")  # noqa: SIM115 - the child keeps it
        self.proc = subprocess.Popen(
            [exe, "--data", str(self.data), "--proxy-port", str(self.port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout_s
        from pymilvus import MilvusClient

        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"milvus-server exited with {self.proc.returncode}; see {log.name}")
            try:
                client = MilvusClient(uri=self.uri, timeout=2)
                client.list_collections()
                client.close()
                return
            except Exception:  # noqa: BLE001 - not up yet
                time.sleep(0.5)
        raise RuntimeError(f"milvus-server did not answer within {timeout_s:.0f} s")

    def stop(self, sig: int = signal.SIGINT, grace_s: float = 30.0) -> None:
        """SIGINT (a clean stop) or SIGKILL (a crash), then wait."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)

    def kill(self) -> None:
        self.stop(signal.SIGKILL)


@contextlib.contextmanager
def running_server() -> Iterator[MilvusServer]:
    """A started server on a fresh temporary data dir, stopped and removed on exit."""
    with open(LOCK, "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        root = Path(tempfile.mkdtemp(prefix="facerec-milvus-test-"))
        server = MilvusServer(root / "data", _free_port())
        try:
            server.start()
            yield server
        finally:
            server.stop()
            shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def milvus_server() -> Iterator[MilvusServer]:
    """The test run's Milvus 2.3 standalone server."""
    with running_server() as server:
        yield server


@pytest.fixture
def milvus_lite_uri(tmp_path: Path) -> str:
    """A fresh milvus-lite database file."""
    return str(tmp_path / "milvus.db")
