"""A collection that exists in Milvus but is not loaded (a restarted Milvus reloading it, or one that released it):
Milvus answers every search ``collection not loaded``. A replica's search waits for that load (up to
``FACEREC_MILVUS_TIMEOUT_S``, starting it if nobody did) instead of answering 503 until something else loads it,
and a starting replica reports ready on ``/readyz`` only once the collection of its model is loaded."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import numpy as np

from service.devmilvus import _free_port
from service.gallery.errors import VectorIndexUnavailable
from service.gallery.milvus import MilvusGallery, MilvusOptions, open_milvus
from service.gallery.postgres.connection import PoolOptions
from tests.milvus.conftest import OpenReplica
from tests.milvus.helpers import MODEL, faces, own_client, unit
from tests.milvusfixtures import MilvusServer
from tests.service.server import Server


def _state(server: MilvusServer, name: str) -> str:
    with own_client(server) as client:
        return str(client.get_load_state(name)["state"])


def _enrolled_then_released(
    open_server_replica: OpenReplica, milvus_server: MilvusServer, rng: np.random.Generator, model: str = MODEL
) -> tuple[MilvusGallery, np.ndarray, int]:
    a = open_server_replica().gallery
    assert isinstance(a, MilvusGallery)
    s = a.create_subject(name="someone")
    vecs = unit(rng, 20)
    recs = a.add_faces(s.id, faces(vecs, model))
    with own_client(milvus_server) as client:
        client.release_collection(a.engine.name(model))
    assert "NotLoad" in _state(milvus_server, a.engine.name(model))
    return a, vecs, recs[3].id


def test_a_search_waits_for_the_collection_to_load(
    open_server_replica: OpenReplica, milvus_server: MilvusServer, rng: np.random.Generator
) -> None:
    a, vecs, face_id = _enrolled_then_released(open_server_replica, milvus_server, rng)
    b = open_server_replica().gallery  # a replica that only searches
    assert isinstance(b, MilvusGallery)
    deadline = time.monotonic() + 60
    while True:  # each search waits up to the replica's timeout (3 s) for the load it asked for
        try:
            got = b.search(vecs[3:4], model_id=MODEL, top_k=1)[0]
            break
        except VectorIndexUnavailable:  # before: `collection not loaded`, for as long as nothing else loaded it
            assert time.monotonic() < deadline, "the collection was never loaded"
            time.sleep(1.1)  # the engine fails fast for 1 s after a failure
    assert got[0].face_id == face_id
    assert "Loaded" in _state(milvus_server, a.engine.name(MODEL))


def test_prepare_search_loads_the_collection_and_gives_up_at_once_without_milvus(
    open_server_replica: OpenReplica, milvus_server: MilvusServer, pg_url: str, rng: np.random.Generator
) -> None:
    a, _, _ = _enrolled_then_released(open_server_replica, milvus_server, rng)
    b = open_server_replica().gallery
    assert isinstance(b, MilvusGallery)
    b.prepare_search(MODEL)
    assert _state(milvus_server, a.engine.name(MODEL)) == "Loaded"
    b.prepare_search("a-model-without-faces")  # no collection yet: nothing to wait for

    down = open_milvus(  # nothing listens on its Milvus port
        pg_url,
        MilvusOptions(uri=f"http://127.0.0.1:{_free_port(8709)}", timeout_s=1.0),
        pool=PoolOptions(min_size=1, max_size=2),
        sync_interval_s=0.0,
    )
    try:
        assert isinstance(down.gallery, MilvusGallery)
        t = time.monotonic()
        down.gallery.prepare_search(MODEL)
        assert time.monotonic() - t < 5
    finally:
        down.close()


def test_a_replica_is_ready_only_once_its_collection_is_loaded(
    open_server_replica: OpenReplica, milvus_server: MilvusServer, pg_url: str, tmp_path: Path
) -> None:
    """Over HTTP: the model's collection released, a replica started; when ``/readyz`` first says 200 the collection
    is loaded (before: 200 at once while identify answered 503 ``collection not loaded``)."""
    model = _served_model_id()
    a, _, _ = _enrolled_then_released(open_server_replica, milvus_server, np.random.default_rng(7), model)
    env = {
        "FACEREC_DATABASE_URL": pg_url,
        "FACEREC_VECTOR_BACKEND": "milvus",
        "FACEREC_MILVUS_URI": milvus_server.uri,
        "FACEREC_RATE_LIMIT_PER_MINUTE": "0",
    }
    server = Server(tmp_path / "replica", env=env)
    try:
        server.start()
        assert _state(milvus_server, a.engine.name(model)) == "Loaded"
        assert httpx.get(f"{server.url}/readyz", timeout=10).json()["ready"] is True
    finally:
        server.stop()


def _served_model_id() -> str:
    """The model id a replica with default settings serves (its collection is the one it searches)."""
    from embeddings.models import resolve_model
    from service.config import Settings

    return str(resolve_model(Settings().model).model_id)
