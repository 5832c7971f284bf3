"""Fixtures for real Milvus: a standalone Milvus 2.3 server (:mod:`service.devmilvus`) started once per test run,
and a milvus-lite database file per test. Nothing is skipped: if Milvus cannot start, the tests that need it fail.
"""

from __future__ import annotations

import atexit
import threading
from pathlib import Path

import pytest

from service.devmilvus import MilvusServer, running_server

__all__ = ["MilvusServer", "milvus_lite_uri", "milvus_server", "shared_server"]

_shared: list[MilvusServer] = []
_shared_lock = threading.Lock()

TEST_SESSION_TTL = "common.session.ttl=15"
"""The test server's etcd session TTL, seconds (``service.devmilvus.SESSION_TTL`` is 5; this one wins). A server
frozen longer than its TTL (tests/milvus/test_outage.py's SIGSTOP) comes back with its sessions expired: its query
node loses its channels and the server stops answering. The test's ~3 s freeze took over 5 s on a loaded CI
machine; 15 s leaves room, and costs the SIGKILL restart test ~10 s more of waiting for its old sessions."""


def shared_server() -> MilvusServer:
    """The test run's server, started on first use (by the fixture or the contract suite's entry) and stopped
    when the test process exits (one per machine: its etcd ports are fixed)."""
    with _shared_lock:
        if not _shared:
            ctx = running_server(extra=(TEST_SESSION_TTL,))
            server = ctx.__enter__()
            atexit.register(ctx.__exit__, None, None, None)
            _shared.append(server)
        return _shared[0]


@pytest.fixture(scope="session")
def milvus_server() -> MilvusServer:
    """The test run's Milvus 2.3 standalone server."""
    return shared_server()


@pytest.fixture
def milvus_lite_uri(tmp_path: Path) -> str:
    """A fresh milvus-lite database file."""
    return str(tmp_path / "milvus.db")
