"""A local Milvus 2.3 standalone server for tests and benchmarks: the ``milvus`` PyPI package's ``milvus-server``
(etcd, rocksmq and every Milvus component in one process, no Docker), on a temporary data dir.

``milvus-server`` ignores SIGTERM: it is stopped with SIGINT (SIGKILL after a grace period). Its etcd listens on
fixed ports (2379/2380), so one server per machine: :func:`running_server` holds ``/tmp/facerec-milvus-test.lock``
while its server runs (a second caller waits).
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

LOCK = "/tmp/facerec-milvus-test.lock"
SESSION_TTL = "common.session.ttl=5"
"""After a SIGKILL the restarted server waits for its old etcd session to expire before its query node serves
(30 s by default); 5 s keeps the fault tests short."""
SEGMENTS = ("dataCoord.segment.sealProportion=1", "dataCoord.segment.maxSize=1024")
"""A growing segment seals at ``dataCoord.segment.maxSize``, not at 23% of it, and that size is 1024 MB (~1.9M faces
of 128-d) instead of 512: every search runs one index per sealed segment, so 1M bulk-loaded faces are searched in
one graph, not five (Milvus's defaults) or two (docs/MILVUS.md: 4.5 ms instead of 5.6-7.5 at 1M)."""


def _free_port(first: int = 29530) -> int:
    """A free port below Linux's ephemeral range (32768+): a client retrying a port in that range while the
    server is down can be handed that very port as its source and connect to itself, keeping the port busy."""
    for port in range(first, first + 500):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port for milvus-server")


def _wait_bindable(port: int, deadline: float) -> None:
    """Wait (until ``deadline``, ``time.monotonic()``) until ``port`` can be bound the way ``milvus-server`` tries
    it, without ``SO_REUSEADDR``. After a stop, the old server's connections linger on the port (TIME_WAIT,
    FIN_WAIT2: up to 60 s on Linux); ``milvus-server`` then silently listens on the next free port instead, and
    every client of the old address waits for ever."""
    while True:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                if time.monotonic() >= deadline:
                    raise RuntimeError(f"port {port} is still in use; milvus-server would listen elsewhere") from None
            else:
                return
        time.sleep(0.5)


class MilvusServer:
    """A ``milvus-server`` process on a temporary data dir; :meth:`kill` / :meth:`start` for fault tests."""

    def __init__(self, data: Path, port: int, extra: tuple[str, ...] = ()) -> None:
        self.data = data
        self.port = port
        self.extra = extra
        """More ``key=value`` settings of milvus.yaml (``--extra-config``)."""
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 90.0) -> None:
        """Start the server and wait until it answers on :attr:`port` (first waiting until the port can be bound,
        see :func:`_wait_bindable`)."""
        deadline = time.monotonic() + timeout_s
        _wait_bindable(self.port, deadline)
        exe = shutil.which("milvus-server") or str(Path(sys.executable).parent / "milvus-server")
        log = open(self.data.parent / "milvus-server.log", "ab")  # noqa: SIM115 - the child keeps it
        self.proc = subprocess.Popen(
            [
                exe,
                *("--data", str(self.data), "--proxy-port", str(self.port)),
                *(a for kv in (SESSION_TTL, *SEGMENTS, *self.extra) for a in ("--extra-config", kv)),  # last wins
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        from pymilvus import MilvusClient

        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"milvus-server exited with {self.proc.returncode}; see {log.name}")
            try:
                client = MilvusClient(uri=self.uri, timeout=2)
                client.list_collections()
                client.close()
                return
            except Exception:
                time.sleep(0.5)
        tail = Path(log.name).read_text(errors="replace").splitlines()[-3:]
        for f in sorted((self.data / "logs").glob("*.log")):
            errors = [ln[:300] for ln in f.read_text(errors="replace").splitlines() if "ERROR" in ln]
            tail += [f.name, *errors[-6:]]
        raise RuntimeError(f"milvus-server did not answer within {timeout_s:.0f} s; its log ends:\n" + "\n".join(tail))

    def stop(self, sig: int = signal.SIGINT, grace_s: float = 30.0, *, child_only: bool = False) -> None:
        """SIGINT to the process group (the wrapper's stop: SIGTERM to Milvus, SIGKILL 1 s later) or SIGKILL (a
        crash), then wait. ``child_only``: ``sig`` to the Milvus process alone (SIGTERM: its own graceful stop,
        however long it takes up to ``grace_s``), then the wrapper is stopped."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        engine = _child(proc.pid) if child_only else None
        if engine is not None:
            os.kill(engine, sig)
            deadline = time.monotonic() + grace_s
            while _alive(engine) and time.monotonic() < deadline:
                time.sleep(0.1)
            sig = signal.SIGINT
        os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def pause(self) -> None:
        """Freeze the server (SIGSTOP to its process group): unreachable, as in a network partition."""
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGCONT)


def _child(pid: int) -> int | None:
    """The first child process of ``pid`` (the wrapper's ``milvus run standalone``)."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        kids = (task / "children").read_text().split()
        if kids:
            return int(kids[0])
    return None


def _alive(pid: int) -> bool:
    """``pid`` exists and is not a zombie."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@contextlib.contextmanager
def running_server(extra: tuple[str, ...] = ()) -> Iterator[MilvusServer]:
    """A started server on a fresh temporary data dir, stopped and removed on exit."""
    with open(LOCK, "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        root = Path(tempfile.mkdtemp(prefix="facerec-milvus-test-"))
        server = MilvusServer(root / "data", _free_port(), extra)
        try:
            server.start()
            yield server
        finally:
            server.stop()
            shutil.rmtree(root, ignore_errors=True)
