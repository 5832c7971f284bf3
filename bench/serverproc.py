"""Shared by the benchmark scripts: run ``facerec serve`` as a child process on a free loopback port."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serve_command(port: int, data: Path) -> list[str]:
    """The command line of a loopback server on ``port`` with its gallery in ``data``."""
    cmd = [sys.executable, "-m", "service.cli", "serve", "--host", "127.0.0.1", "--port", str(port)]
    return [*cmd, "--data", str(data), "--log-level", "warning"]


def wait_ready(
    proc: subprocess.Popen[bytes],
    url: str,
    *,
    timeout_s: float,
    poll_s: float = 0.3,
    tail: Callable[[], str] = lambda: "",
) -> float:
    """Poll ``url``/readyz until it answers 200; seconds waited. ``RuntimeError`` (with ``tail()``, e.g. the end
    of the server's log) when the process exits first or ``timeout_s`` passes."""
    start = time.monotonic()
    while time.monotonic() - start < timeout_s:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}: {tail()}")
        try:
            if httpx.get(f"{url}/readyz", timeout=2.0).status_code == 200:
                return time.monotonic() - start
        except httpx.HTTPError:
            pass
        time.sleep(poll_s)
    raise RuntimeError(f"server not ready after {timeout_s:.0f} s: {tail()}")


def stop(proc: subprocess.Popen[bytes] | None, timeout_s: float = 60.0) -> int | None:
    """SIGTERM (graceful shutdown), then SIGKILL after ``timeout_s``; the exit code (None if never started)."""
    if proc is None:
        return None
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


REPO = Path(__file__).resolve().parents[1]


class BenchServer:
    """``facerec serve`` on ``data`` as a child process on a free loopback port, its output in ``log``. Every bench
    client shares one key and one IP, so the per-key rate limit is off; ``env`` adds or overrides settings;
    ``repo``: the checkout to run (default this one; another one gives side-by-side figures)."""

    def __init__(self, data: Path, log: Path, env: dict[str, str] | None = None, repo: Path = REPO) -> None:
        self.data, self.log, self.repo = data, log, repo
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        base = {"PYTHONPATH": str(repo), "TF_CPP_MIN_LOG_LEVEL": "2", "FACEREC_RATE_LIMIT_PER_MINUTE": "0"}
        self.env = {**os.environ, **base, **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None

    def create_key(self, name: str) -> str:
        """A new admin key's token (``facerec keys create``, before the server takes the data dir)."""
        cmd = [sys.executable, "-m", "service.cli", "keys", "create", "--scope", "admin", "--name", name, "--json"]
        out = subprocess.run(
            [*cmd, "--data", str(self.data)], cwd=self.repo, env=self.env, capture_output=True, text=True, check=True
        )
        return str(json.loads(out.stdout.strip().splitlines()[-1])["token"])

    def start(self, timeout_s: float = 300.0, poll_s: float = 0.3) -> float:
        """Start it and wait for ``/readyz``: seconds from the spawn to the first 200."""
        t0 = time.monotonic()
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                serve_command(self.port, self.data), cwd=self.repo, env=self.env, stdout=log, stderr=subprocess.STDOUT
            )
        wait_ready(self.proc, self.url, timeout_s=timeout_s, poll_s=poll_s, tail=self.tail)
        return time.monotonic() - t0

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def tail(self, n: int = 3000) -> str:
        """The end of the server's log."""
        return self.log.read_text(errors="replace")[-n:] if self.log.exists() else ""

    def stop(self) -> int | None:
        """SIGTERM, then its exit code (see :func:`stop`)."""
        return stop(self.proc)
