"""Against the real Milvus 2.3 standalone server: the engine's search at the gallery's guarantee timestamp gives the
very hits (ids and squared L2 distances) a Strong search gives; upserted rows stay in the collection's
one partition (with 16, Milvus 2.3.5 spreads rows of one partition key over all of them, and every search then
runs one index per partition's segment); a search after another replica dropped the collection answers empty,
not 503."""

from __future__ import annotations

import uuid

import numpy as np

from service.gallery.milvus import MilvusEngine, MilvusGallery, MilvusOptions, outbox
from tests.milvus.conftest import OpenReplica
from tests.milvus.helpers import MODEL, faces, unit


def _gallery(open_server_replica: OpenReplica, **kw: object) -> MilvusGallery:
    g = open_server_replica(**kw).gallery
    assert isinstance(g, MilvusGallery)
    return g


def _rows_per_partition(engine: MilvusEngine) -> dict[int, int]:
    """Rows per partition id of the flushed collection (data coordinator's segment list)."""
    client = engine._connect()
    name = engine.name(MODEL)
    client.flush(name)
    out: dict[int, int] = {}
    for seg in client.list_persistent_segments(name, timeout=30):
        out[seg.partition_id] = out.get(seg.partition_id, 0) + seg.num_rows
    return out


def test_engine_hits_match_a_strong_search(open_server_replica: OpenReplica, rng: np.random.Generator) -> None:
    g = _gallery(open_server_replica)
    s = g.create_subject(name="many")
    g.add_faces(s.id, faces(unit(rng, 300)))
    probes = unit(rng, 5)
    with g._conn() as conn:
        ts = outbox.write_ts(conn, MODEL)
    ours = g.engine.search(MODEL, probes, 10, guarantee_ts=ts)
    client = g.engine._connect()
    theirs = client.search(
        g.engine.name(MODEL),
        data=[p.tolist() for p in probes],
        limit=10,
        search_params={"metric_type": "L2", "params": {"ef": g.engine.options.ef}},
        consistency_level="Strong",
    )
    assert len(ours) == len(theirs) == 5
    for mine, ref in zip(ours, theirs, strict=True):
        assert [fid for fid, _ in mine] == [int(h["id"]) for h in ref]
        assert np.allclose([d for _, d in mine], [float(h["distance"]) for h in ref], atol=1e-5)
    # and the distances are Milvus's squared L2 of the stored vectors
    stored = g.engine.get_vectors(MODEL, [ours[0][0][0]])
    assert abs(float(np.sum((stored[ours[0][0][0]] - probes[0]) ** 2)) - ours[0][0][1]) < 1e-4


def test_upserted_rows_stay_in_one_partition(
    open_server_replica: OpenReplica, server_uri: str, rng: np.random.Generator
) -> None:
    one = _gallery(open_server_replica)
    s = one.create_subject(name="a")
    one.add_faces(s.id, faces(unit(rng, 200)))  # drained into Milvus as upserts
    assert list(_rows_per_partition(one.engine).values()) == [200]
    # Why one: with 16 partitions the server spreads upserted rows of the one scope over several of them
    sixteen = MilvusEngine(MilvusOptions(uri=server_uri, timeout_s=10, num_partitions=16), uuid.uuid4().hex)
    try:
        sixteen.upsert(MODEL, list(range(1, 201)), unit(rng, 200), scope=0)
        spread = _rows_per_partition(sixteen)
        assert sum(spread.values()) == 200 and len(spread) > 1
    finally:
        sixteen.drop(MODEL)
        sixteen.close()


def test_search_after_another_replica_dropped_the_collection(
    open_server_replica: OpenReplica, rng: np.random.Generator
) -> None:
    a = _gallery(open_server_replica)
    b = _gallery(open_server_replica)
    s = a.create_subject(name="a")
    v = unit(rng, 3)
    a.add_faces(s.id, faces(v))
    assert b.search(v[:1], model_id=MODEL, top_k=1)[0]  # B has seen the collection
    a.engine.drop(MODEL)
    assert b.engine.search(MODEL, v[:1], 1) == [[]]


def test_settings_reach_the_engine_options() -> None:
    """``FACEREC_MILVUS_EF`` and the other ``FACEREC_MILVUS_*`` settings become the engine's options."""
    from service.config import Settings
    from service.milvus_backend import milvus_options

    settings = Settings(milvus_uri="http://127.0.0.1:19530", milvus_ef=48, milvus_index="ivf_sq8", milvus_timeout_s=2.5)
    opts = milvus_options(settings)
    assert (opts.uri, opts.ef, opts.index_type, opts.timeout_s) == ("http://127.0.0.1:19530", 48, "IVF_SQ8", 2.5)
    assert milvus_options(Settings(milvus_uri="x.db")).ef == MilvusOptions(uri="x.db").ef == 128
