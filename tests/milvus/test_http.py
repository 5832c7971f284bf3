"""Two real ``facerec serve`` processes (real weights, real uvicorn) with ``FACEREC_VECTOR_BACKEND=milvus``: one
real PostgreSQL (the truth) and the real Milvus 2.3 standalone server (the index), read-your-writes over HTTP
in both directions (:mod:`tests.replicacheck`)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.milvusfixtures import MilvusServer
from tests.pgfixtures import fresh_database
from tests.replicacheck import check_read_your_writes
from tests.service.server import Server

pytestmark = pytest.mark.slow


def _collections(server: MilvusServer) -> set[str]:
    from pymilvus import MilvusClient

    client = MilvusClient(uri=server.uri)
    try:
        return set(client.list_collections())
    finally:
        client.close()


@pytest.fixture(scope="module")
def milvus_replicas(
    tmp_path_factory: pytest.TempPathFactory, milvus_server: MilvusServer
) -> Iterator[tuple[list[Server], set[str]]]:
    """The two replicas, and the Milvus collections that existed before they started."""
    before = _collections(milvus_server)
    with fresh_database() as url:
        env = {
            "FACEREC_DATABASE_URL": url,
            "FACEREC_VECTOR_BACKEND": "milvus",
            "FACEREC_MILVUS_URI": milvus_server.uri,
            "FACEREC_RATE_LIMIT_PER_MINUTE": "0",
        }
        root = tmp_path_factory.mktemp("milvus-replicas")
        servers = [Server(root / "a", env=env), Server(root / "b", env=env)]
        try:
            started = [threading.Thread(target=s.start) for s in servers]
            for t in started:
                t.start()
            for t in started:
                t.join()
            assert all(s.proc is not None for s in servers), "a replica did not start (see its log)"
            yield servers, before
        finally:
            for s in servers:
                s.stop()


def test_read_your_writes_across_milvus_replicas(
    milvus_server: MilvusServer, milvus_replicas: tuple[list[Server], set[str]], celebrity_root: Path
) -> None:
    (a, b), before = milvus_replicas
    check_read_your_writes(a.url, b.url, celebrity_root)
    made = {c for c in _collections(milvus_server) - before if c.startswith("facerec_")}
    assert made, "the replicas wrote no Milvus collection: they did not search through Milvus"
