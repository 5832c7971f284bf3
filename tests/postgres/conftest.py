"""Fixtures of the PostgreSQL backend tests: backends ("replicas") opened on the test's fresh database."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TypedDict, Unpack

import numpy as np
import pytest

from service.devdb import DevCluster
from service.gallery.postgres import VectorOptions
from service.gallery.postgres.connection import PoolOptions
from service.gallery.postgres.vectors import HnswBuild
from service.pgstores import PostgresBackend, open_postgres
from tests.pgfixtures import new_cluster


class VectorKwargs(TypedDict, total=False):
    """The fields of :class:`VectorOptions`, as ``open_replica`` keywords."""

    ef_search: int
    build: HnswBuild
    exact_below: int
    overfetch: int


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture
def open_replica(pg_url: str) -> Iterator[Callable[..., PostgresBackend]]:
    """``open_replica(**vector_options)``: a backend on the test's database, as a replica would open it; each
    call is another independent replica (own pool), closed after the test."""
    opened: list[PostgresBackend] = []

    def make(*, pool: PoolOptions | None = None, **vector_options: Unpack[VectorKwargs]) -> PostgresBackend:
        backend = open_postgres(
            pg_url, pool=pool or PoolOptions(min_size=1, max_size=4), vectors=VectorOptions(**vector_options)
        )
        opened.append(backend)
        return backend

    yield make
    for backend in opened:
        backend.close()


@pytest.fixture
def own_cluster() -> Iterator[DevCluster]:
    """A cluster of this test's own (it is stopped and restarted)."""
    cluster = new_cluster()
    yield cluster
    cluster.destroy()
