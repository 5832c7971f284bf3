"""Shared by the benchmark scripts: run ``facerec serve`` as a child process on a free loopback port."""

from __future__ import annotations

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
