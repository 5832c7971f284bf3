"""The Milvus engine keeps the PostgreSQL backend's guarantees, on milvus-lite and on a real Milvus 2.3 server:
acknowledged enrolments are found at once (by every replica), erased faces are never returned (even while Milvus
still holds their vectors), a crash between the two stores loses nothing, orphans are never returned, and
reconcile finds and repairs every kind of difference."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from service.gallery.milvus import MilvusGallery
from service.gallery.milvus.reconcile import rebuild, reconcile
from service.gallery.postgres.gallery import PostgresGallery
from tests.milvus.conftest import OpenReplica
from tests.milvus.helpers import MODEL, faces, unit


def _gallery(open_replica: OpenReplica) -> MilvusGallery:
    g = open_replica().gallery
    assert isinstance(g, MilvusGallery)
    return g


def test_enrol_search_erase(open_replica: OpenReplica, rng: np.random.Generator) -> None:
    g = _gallery(open_replica)
    vecs = unit(rng, 60)
    subjects = g.create_subjects([(f"s{i}", None) for i in range(20)])
    recs = g.add_faces_many({s.id: faces(vecs[3 * i : 3 * i + 3]) for i, s in enumerate(subjects)})
    assert g.pending() == 0
    got = g.search(vecs[[0, 31]], model_id=MODEL, top_k=3)
    assert got[0][0].subject_id == subjects[0].id and got[0][0].distance < 1e-3
    assert got[1][0].subject_id == subjects[10].id
    assert [c.subject_id for c in got[0]] == list(dict.fromkeys(c.subject_id for c in got[0]))  # grouped
    g.delete_face(recs[0].id)
    again = g.search(vecs[[0]], model_id=MODEL, top_k=3)[0]
    assert recs[0].id not in {c.face_id for c in again}
    assert g.search(vecs[[1]], model_id=MODEL, top_k=1)[0][0].subject_id == subjects[0].id  # its other faces
    g.delete_subject(subjects[0].id)
    assert subjects[0].id not in {c.subject_id for c in g.search(vecs[[0]], model_id=MODEL, top_k=5)[0]}
    assert reconcile(g).differences == 0


def test_crash_between_stores_loses_nothing(open_replica: OpenReplica, rng: np.random.Generator) -> None:
    """Committed in PostgreSQL with its outbox row but never sent to Milvus (the writer died): still found, and
    the next drain indexes it; erased in PostgreSQL only: never returned though Milvus still has it."""
    g = _gallery(open_replica)
    vecs = unit(rng, 4)
    s = g.create_subject(name="crash")
    PostgresGallery.add_faces_many(g, {s.id: faces(vecs[:2])})  # commit, no drain: a crash right after
    assert g.pending() == 2
    hit = g.search(vecs[[1]], model_id=MODEL, top_k=1)[0]
    assert hit and hit[0].subject_id == s.id and hit[0].distance < 1e-3
    assert reconcile(g).differences == 0  # pending faces are the drain's, not differences
    g.drain()
    assert g.pending() == 0 and reconcile(g).differences == 0
    [rec] = g.add_faces(s.id, faces(vecs[2:3]))
    PostgresGallery.delete_face(g, rec.id)  # erased in PostgreSQL; the Milvus delete never sent
    assert rec.id not in {c.face_id for c in g.search(vecs[[2]], model_id=MODEL, top_k=5)[0]}


def test_orphan_and_stale_vectors_never_returned_and_repaired(
    open_replica: OpenReplica, rng: np.random.Generator
) -> None:
    g = _gallery(open_replica)
    vecs = unit(rng, 5)
    s = g.create_subject(name="a")
    recs = g.add_faces(s.id, faces(vecs[:3]))
    g.engine.upsert(MODEL, [10_000_000], vecs[3:4])  # orphan: no such face
    g.engine.upsert("old-model", [recs[0].id], vecs[0:1])  # stale: face of another model now
    with g._conn() as conn:  # a lost vector: the face is in PostgreSQL, Milvus lost it
        conn.execute("DELETE FROM vector_outbox")
        conn.execute("INSERT INTO vector_sync VALUES ('old-model', 0)")  # as a drain of that model leaves it
    g.engine.delete(MODEL, [recs[2].id])
    assert 10_000_000 not in {c.face_id for c in g.search(vecs[[3]], model_id=MODEL, top_k=5)[0]}
    report = reconcile(g)
    assert report.models[MODEL].orphaned == [10_000_000]
    assert report.models[MODEL].missing == [recs[2].id]
    assert report.models["old-model"].stale_model == [recs[0].id]
    assert reconcile(g, repair=True).differences == 3
    assert reconcile(g).differences == 0
    assert g.search(vecs[[2]], model_id=MODEL, top_k=1)[0][0].face_id == recs[2].id


def test_vectors_postgresql_does_not_hold_take_no_top_k_place(
    open_replica: OpenReplica, rng: np.random.Generator
) -> None:
    """Milvus's nearest vectors to the probe belong to no face PostgreSQL holds (orphans, as an erased face's vector
    is until Milvus applies its delete): asking for every subject of a small gallery still returns every one."""
    g = _gallery(open_replica)
    vecs = unit(rng, 4)
    subjects = g.create_subjects([(f"s{i}", None) for i in range(4)])
    g.add_faces_many({s.id: faces(vecs[i : i + 1]) for i, s in enumerate(subjects)})
    probe = unit(rng, 1)
    g.engine.upsert(MODEL, [10_000_001, 10_000_002, 10_000_003], np.repeat(probe, 3, axis=0))
    g.add_faces(subjects[0].id, faces(vecs[:1]))  # a later write: the search's guarantee timestamp covers them
    got = g.search(probe, model_id=MODEL, top_k=4)[0]
    assert sorted(c.subject_id for c in got) == sorted(s.id for s in subjects)


def test_switch_model_moves_vectors(open_replica: OpenReplica, rng: np.random.Generator) -> None:
    g = _gallery(open_replica)
    vecs, new = unit(rng, 6), unit(rng, 6)
    s = g.create_subject(name="a")
    recs = g.add_faces(s.id, faces(vecs))
    assert g.stage_embeddings("model-2", [r.id for r in recs], new) == 6
    assert g.switch_model("model-2") == 6
    assert g.search(new[[4]], model_id="model-2", top_k=1)[0][0].face_id == recs[4].id
    report = reconcile(g)
    assert report.differences == 0 and report.models["model-2"].vectors == 6 and report.models[MODEL].vectors == 0


def test_rebuild_index(open_replica: OpenReplica, rng: np.random.Generator) -> None:
    g = _gallery(open_replica)
    vecs = unit(rng, 50)
    subs = g.create_subjects([(f"s{i}", None) for i in range(50)])
    g.add_faces_many({s.id: faces(vecs[i : i + 1]) for i, s in enumerate(subs)})
    g.engine.drop(MODEL)
    assert reconcile(g).models[MODEL].missing  # the index was lost
    seen: list[tuple[int, int]] = []
    assert rebuild(g, batch=20, progress=lambda d, t: seen.append((d, t))) == {MODEL: 50}
    assert seen[-1] == (50, 50) and len(seen) == 3
    assert reconcile(g).differences == 0
    assert g.search(vecs[[17]], model_id=MODEL, top_k=1)[0][0].subject_id == subs[17].id


def test_model_mismatch_and_empty(open_replica: OpenReplica, rng: np.random.Generator) -> None:
    from service.gallery.errors import ModelMismatch

    g = _gallery(open_replica)
    assert g.search(unit(rng, 2), model_id=MODEL) == [[], []]
    s = g.create_subject(name="a")
    g.add_faces(s.id, faces(unit(rng, 1)))
    with pytest.raises(ModelMismatch):
        g.search(unit(rng, 1), model_id="other")


def test_service_drains_and_reconciles_by_itself(open_replica: OpenReplica, rng: np.random.Generator) -> None:
    """The sync thread applies outbox rows a crashed writer left and the periodic reconcile removes an orphan."""
    import time

    g = open_replica(sync_interval_s=0.2, reconcile_interval_s=0.5).gallery
    assert isinstance(g, MilvusGallery)
    vecs = unit(rng, 3)
    s = g.create_subject(name="a")
    PostgresGallery.add_faces_many(g, {s.id: faces(vecs[:2])})  # a writer that died before draining
    g.engine.upsert(MODEL, [77_777_777], vecs[2:3])  # an orphan vector
    deadline = time.monotonic() + 20
    while g.pending() or reconcile(g).differences:
        assert time.monotonic() < deadline, "the service did not drain and reconcile by itself"
        time.sleep(0.3)
    assert reconcile(g).models[MODEL].vectors == 2


def test_repair_keeps_a_face_enrolled_while_reconciling(open_replica: OpenReplica, rng: np.random.Generator) -> None:
    """A face enrolled and drained after reconcile read PostgreSQL's faces, before it listed Milvus's ids, looks
    orphaned; the repair must not delete its vector (the face would be missed until the next reconcile)."""
    g = _gallery(open_replica)
    vecs = unit(rng, 4)
    s = g.create_subject(name="a")
    g.add_faces(s.id, faces(vecs[:2]))
    listing = g.engine.iter_ids_of
    late = []

    def enrol_then_list(name: str, batch: int = 10_000) -> Iterator[list[int]]:
        late.extend(g.add_faces(s.id, faces(vecs[2:3])))  # acknowledged between the two reads
        yield from listing(name, batch)

    g.engine.iter_ids_of = enrol_then_list  # type: ignore[method-assign]
    try:
        reconcile(g, repair=True)
    finally:
        g.engine.iter_ids_of = listing  # type: ignore[method-assign]
    g.add_faces(s.id, faces(vecs[3:4]))  # a later write: searches now see every earlier Milvus mutation
    assert g.search(vecs[2:3], model_id=MODEL, top_k=1)[0][0].face_id == late[0].id
    assert reconcile(g).differences == 0
