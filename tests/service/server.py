"""A real facerec server in a subprocess (``python -m service.cli serve``) on a free loopback port."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from bench.serverproc import free_port, serve_command
from service.keys import KeyStore, Scope

REPO = Path(__file__).resolve().parents[2]


class Server:
    """One server on ``data``: start, stop, restart; ``saw_not_ready``: /readyz said 503 while loading."""

    def __init__(self, data: Path, *, env: dict[str, str] | None = None, log: Path | None = None) -> None:
        self.data = data
        self.env = env or {}
        self.log = log or data.parent / f"{data.name}-server.log"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.saw_not_ready = False

    def start(self, timeout: float = 240.0) -> Server:
        env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "2", **self.env}
        cmd = serve_command(self.port, self.data)
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}: {self.log.read_text()[-2000:]}")
            try:
                r = httpx.get(f"{self.url}/readyz", timeout=2.0)
                if r.status_code == 200:
                    return self
                self.saw_not_ready |= r.status_code == 503
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"server not ready after {timeout}s: {self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def restart(self) -> Server:
        self.stop()
        self.saw_not_ready = False
        return self.start()

    def serving(self) -> Iterator[Server]:
        """Start, yield, stop: a fixture's body is ``yield from Server(...).serving()``."""
        self.start()
        try:
            yield self
        finally:
            self.stop()


def make_keys(data: Path, *, revoke: tuple[str, ...] = (), **scope_of: Scope) -> dict[str, str]:
    """One API key per ``name=scope`` in ``data``'s key store, the names in ``revoke`` revoked; name -> token."""
    store = KeyStore(data)
    try:
        tokens = {}
        for name, scope in scope_of.items():
            key, tokens[name] = store.create(scope=scope, name=name)
            if name in revoke:
                store.revoke(key.id)
        return tokens
    finally:
        store.close()


def run_serve(*args: str) -> subprocess.CompletedProcess[str]:
    """``facerec serve ARGS`` to its exit (for servers that must refuse to start), with a minimal environment."""
    cmd = [sys.executable, "-m", "service.cli", "serve", *args]
    env = {"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120, env=env)
