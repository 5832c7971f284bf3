"""The engine's pymilvus internals (service/gallery/milvus/rpc.py), each call exercised against the real Milvus 2.3
server, so that a pymilvus upgrade that changes them fails here, loudly: the installed version must be one the
module was verified with; the write requests built from numpy decode to exactly the rows given; insert, upsert and
delete through the client's gRPC handler apply, and insert and upsert return hybrid timestamps that a search at
that guarantee timestamp honours at once; a client without those internals is refused at connect with a clear
reason (503, no crash)."""

from __future__ import annotations

import logging
import time
import uuid

import numpy as np
import pymilvus
import pytest
from pymilvus.grpc_gen import milvus_pb2

from service.gallery.errors import VectorIndexUnavailable
from service.gallery.milvus import MilvusEngine, MilvusOptions, rpc
from service.gallery.milvus.indexes import search_params
from tests.milvus.helpers import MODEL, unit


def test_installed_pymilvus_is_verified() -> None:
    assert pymilvus.__version__ in rpc.VERIFIED, (
        f"pymilvus {pymilvus.__version__} is not in rpc.VERIFIED: if this file passes against it, add it there"
    )


def test_vectors_ids_and_scope_round_trip() -> None:
    """Every id, the scope and every float32 of every vector, for both kinds, including a vector buffer longer
    than one varint byte can size."""
    x = np.random.default_rng(1).standard_normal((300, 128)).astype(np.float32)
    ids = list(range(10**12, 10**12 + 300))
    for op, kind in (("upsert", milvus_pb2.UpsertRequest), ("insert", milvus_pb2.InsertRequest)):
        req = kind.FromString(rpc.mutation_request(op, "c", ids, x, scope=3).SerializeToString())
        assert (req.collection_name, req.num_rows) == ("c", 300)
        f_id, f_scope, f_vec = req.fields_data
        assert list(f_id.scalars.long_data.data) == ids
        assert set(f_scope.scalars.long_data.data) == {3}
        assert f_vec.vectors.dim == 128
        assert np.array_equal(np.array(f_vec.vectors.float_vector.data, np.float32).reshape(300, 128), x)


def test_search_params_per_index() -> None:
    assert search_params("HNSW", 128, 40) == {"metric_type": "L2", "params": {"ef": 128}}
    assert search_params("hnsw", 16, 40)["params"] == {"ef": 40}
    assert search_params("IVF_SQ8", 128, 40)["params"] == {"nprobe": 16}
    assert search_params("DISKANN", 10, 40)["params"] == {"search_list": 40}
    assert search_params("FLAT", 128, 40)["params"] == {}


def test_mutation_timestamps_are_honoured_by_searches(server_uri: str, rng: np.random.Generator) -> None:
    engine = MilvusEngine(MilvusOptions(uri=server_uri, timeout_s=10), uuid.uuid4().hex)
    name = engine.ensure_collection(MODEL, 128)
    client = engine._connect()

    def nearest(x: np.ndarray, ts: int) -> tuple[int, float]:
        hits = client.search(
            name,
            data=[x.tolist()],
            limit=1,
            search_params={"metric_type": "L2", "params": {"ef": 64}},
            consistency_level="Customized",
            guarantee_timestamp=ts,
        )[0]
        return (int(hits[0]["id"]), float(hits[0]["distance"])) if hits else (-1, 0.0)

    try:
        v = unit(rng, 5)
        t_insert = rpc.mutate(client, "insert", name, rpc.mutation_request("insert", name, [1, 2, 3, 4], v[:4]), 10)
        assert abs((t_insert >> 18) / 1000 - time.time()) < 60  # a hybrid timestamp: physical ms << 18
        assert nearest(v[2], t_insert) == (3, pytest.approx(0.0, abs=1e-5))
        t_upsert = rpc.mutate(client, "upsert", name, rpc.mutation_request("upsert", name, [3], v[4:5]), 10)
        assert t_insert < t_upsert
        assert nearest(v[4], t_upsert) == (3, pytest.approx(0.0, abs=1e-5))  # the new vector of face 3
        t_delete = rpc.mutate(client, "delete", name, [1], 10)
        # Milvus 2.3.5 answers a delete with timestamp 0 (the gallery needs none: erased faces are filtered
        # against PostgreSQL); the delete itself is applied
        assert t_delete == 0 or t_delete > t_upsert
        assert client.query(name, filter="id in [1, 2]", output_fields=["id"], consistency_level="Strong") == [
            {"id": 2}
        ]
        with pytest.raises(ValueError, match="unknown mutation"):
            rpc.mutate(client, "merge", name, [], 10)
    finally:
        engine.drop(MODEL)
        engine.close()


def test_check_client_refuses_missing_internals(
    server_uri: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    engine = MilvusEngine(MilvusOptions(uri=server_uri, timeout_s=5), uuid.uuid4().hex)
    try:
        rpc.check_client(engine._connect())  # this pymilvus: nothing missing
        with pytest.raises(rpc.UnsupportedPymilvus, match="_get_connection"):
            rpc.check_client(object())
        # an upgrade that drops a handler call: the engine refuses to connect, its calls answer unavailable
        engine.close()
        monkeypatch.setattr(rpc, "_HANDLER_CALLS", ("upsert", "no_such_call"))
        monkeypatch.setattr(rpc, "VERIFIED", frozenset({"0.0.0"}))
        monkeypatch.setattr(rpc, "_warned", set())
        with (
            caplog.at_level(logging.ERROR, "facerec.gallery.milvus"),
            pytest.raises(VectorIndexUnavailable, match=r"handler\.no_such_call"),
        ):
            engine.upsert(MODEL, [1], unit(np.random.default_rng(0)))
        assert any("is not one the Milvus engine's write path was verified with" in r.message for r in caplog.records)
    finally:
        engine.close()
