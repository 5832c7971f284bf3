"""Fixtures of the Milvus engine tests: replicas (PostgreSQL backend + MilvusGallery) on the test's fresh database,
against milvus-lite (a file per test) or the test run's real Milvus 2.3 standalone server."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import pytest

from service.gallery.milvus import MilvusOptions, open_milvus
from service.gallery.postgres import PostgresDatabase
from service.gallery.postgres.connection import PoolOptions
from tests.milvusfixtures import MilvusServer

OpenReplica = Callable[..., PostgresDatabase]


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(4321)


@pytest.fixture(params=["lite", "server"])
def milvus_uri(request: pytest.FixtureRequest) -> str:
    """milvus-lite (immediate consistency) and the real server (stale reads, delete lag)."""
    if request.param == "lite":
        return str(request.getfixturevalue("milvus_lite_uri"))
    server: MilvusServer = request.getfixturevalue("milvus_server")
    return server.uri


@pytest.fixture
def server_uri(milvus_server: MilvusServer) -> str:
    return milvus_server.uri


def _opener(pg_url: str, uri: str) -> Iterator[OpenReplica]:
    opened: list[PostgresDatabase] = []

    def make(*, sync_interval_s: float = 0.0, reconcile_interval_s: float = 0.0, **kw: object) -> PostgresDatabase:
        backend = open_milvus(
            pg_url,
            MilvusOptions(uri=uri, timeout_s=3.0, **kw),  # type: ignore[arg-type]
            pool=PoolOptions(min_size=1, max_size=4),
            sync_interval_s=sync_interval_s,
            reconcile_interval_s=reconcile_interval_s,
        )
        opened.append(backend)
        return backend

    yield make
    for b in opened:
        b.close()


@pytest.fixture
def open_replica(pg_url: str, milvus_uri: str) -> Iterator[OpenReplica]:
    """``open_replica()``: a replica on the test's database and Milvus (lite: one replica per file)."""
    yield from _opener(pg_url, milvus_uri)


@pytest.fixture
def open_server_replica(pg_url: str, server_uri: str) -> Iterator[OpenReplica]:
    """Replicas against the real server only (several share it, like a deployment)."""
    yield from _opener(pg_url, server_uri)
