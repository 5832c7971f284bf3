"""What only the PostgreSQL backend has to prove: replicas share one truth with no state of their own, one HNSW
index per model (exact scans while small), trigger-kept counts, re-indexing inside the database."""

from __future__ import annotations

import threading
from collections.abc import Callable

import numpy as np
import psycopg
import pytest
from psycopg import sql

from service.gallery import FaceNotFound, InvalidEmbedding, ModelMismatch, ReindexIncomplete, SubjectNotFound
from service.gallery.postgres.vectors import index_name
from service.pgstores import PostgresBackend
from tests.gallery.conftest import MODEL, faces, unit

Replica = Callable[..., PostgresBackend]


def test_read_your_writes_and_erasure_across_replicas(open_replica: Replica, rng: np.random.Generator) -> None:
    a, b = open_replica().gallery, open_replica().gallery
    s = a.create_subject(name="alice", metadata={"team": "x"})
    assert b.get_subject(s.id).name == "alice"
    v = unit(rng, 3)
    recs = a.add_faces(s.id, faces(v))
    hit = b.search(v[1], model_id=MODEL, top_k=1)[0][0]  # the very next request, on the other replica
    assert (hit.subject_id, hit.face_id) == (s.id, recs[1].id) and hit.distance < 1e-3
    a.delete_face(recs[1].id)
    assert all(c.face_id != recs[1].id for row in b.search(v, model_id=MODEL, top_k=5) for c in row)
    with pytest.raises(FaceNotFound):
        b.get_face(recs[1].id)
    assert a.delete_subject(s.id) == 2
    assert b.search(v, model_id=MODEL, top_k=5) == [[], [], []]
    with pytest.raises(SubjectNotFound):
        b.list_faces(s.id)
    assert b.face_count(MODEL) == 0 and b.subject_count() == 0


def test_erased_faces_are_never_returned_while_another_replica_searches(
    open_replica: Replica, rng: np.random.Generator
) -> None:
    a, b = open_replica().gallery, open_replica().gallery
    subjects = a.create_subjects([(f"s{i}", None) for i in range(50)])
    vecs = unit(rng, 200)
    recs = a.add_faces_many({s.id: faces(vecs[4 * i : 4 * i + 4]) for i, s in enumerate(subjects)})
    erased: set[int] = set()
    seen_after_erase: list[int] = []
    stop = threading.Event()

    def searcher() -> None:
        while not stop.is_set():
            gone = set(erased)  # erasures acknowledged before this search started
            for row in b.search(vecs[::7], model_id=MODEL, top_k=10):
                seen_after_erase.extend(c.face_id for c in row if c.face_id in gone)

    t = threading.Thread(target=searcher)
    t.start()
    try:
        for r in recs[::3]:
            a.delete_face(r.id)
            erased.add(r.id)
    finally:
        stop.set()
        t.join()
    assert seen_after_erase == []


def test_hnsw_index_per_model_and_exact_scan_while_small(open_replica: Replica, pg_url: str, rng) -> None:
    g = open_replica(exact_below=0).gallery  # always the index
    s = g.create_subject(name="a")
    g.add_faces(s.id, faces(unit(rng, 3)) + faces(unit(rng, 2), model="other-model"))
    with psycopg.connect(pg_url) as c:
        defs: dict[str, str] = dict(
            c.execute("SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'faces'").fetchall()
        )
        for model in (MODEL, "other-model"):
            assert "USING hnsw" in defs[index_name(model)] and f"'{model}'" in defs[index_name(model)]
        probe = "[" + ",".join(["0.0883883"] * 128) + "]"
        # with 3 rows the planner rightly prefers a b-tree scan and a sort; make it choose between indexes only
        c.execute("SET enable_seqscan = off")
        c.execute("SET enable_bitmapscan = off")
        lit = f"'{MODEL}'"
        plan_ann = "\n".join(
            r[0]
            for r in c.execute(
                f"EXPLAIN SELECT id FROM faces f WHERE f.model_id = {lit} "
                f"ORDER BY f.embedding <-> '{probe}'::vector LIMIT 5"
            )
        )
        plan_exact = "\n".join(
            r[0]
            for r in c.execute(
                f"EXPLAIN SELECT id FROM faces f WHERE f.model_id = {lit} "
                f"ORDER BY (f.embedding <-> '{probe}'::vector) + 0 LIMIT 5"
            )
        )
    assert index_name(MODEL) in plan_ann
    assert "hnsw" not in plan_exact and index_name(MODEL) not in plan_exact
    stats = g.stats()
    assert stats.indexes[MODEL].kind == "hnsw" and stats.faces_by_model == {MODEL: 3, "other-model": 2}


def test_hnsw_recall_at_1_against_exact(open_replica: Replica, rng: np.random.Generator) -> None:
    ann = open_replica(exact_below=0).gallery
    exact = open_replica(exact_below=10**9).gallery
    subjects = ann.create_subjects([(f"s{i}", None) for i in range(1500)])
    vecs = unit(rng, 1500)
    ann.add_faces_many({s.id: faces(vecs[i : i + 1]) for i, s in enumerate(subjects)})
    probes = vecs[:100] + 0.1 * unit(rng, 100)
    probes /= np.linalg.norm(probes, axis=1, keepdims=True)
    got = ann.search(probes, model_id=MODEL, top_k=1)
    want = exact.search(probes, model_id=MODEL, top_k=1)
    recall = np.mean([g[0].face_id == w[0].face_id for g, w in zip(got, want, strict=True)])
    assert recall >= 0.99
    # the exact path matches numpy's brute force
    d = np.linalg.norm(vecs[None, :, :] - probes[:, None, :], axis=2)
    assert [w[0].subject_id for w in want] == [subjects[i].id for i in d.argmin(axis=1)]
    assert np.allclose([w[0].distance for w in want], d.min(axis=1), atol=1e-5)


def test_top_k_grows_past_the_overfetch_for_a_crowding_subject(open_replica: Replica, rng) -> None:
    for exact_below in (0, 10**9):  # the HNSW path and the exact path
        g = open_replica(exact_below=exact_below, overfetch=1).gallery
        probe = unit(rng, 1)[0]
        crowd = g.create_subject(name="crowd")
        near = probe + 0.02 * unit(rng, 150)
        g.add_faces(crowd.id, faces(near / np.linalg.norm(near, axis=1, keepdims=True), model=f"m{exact_below}"))
        loners = g.create_subjects([(f"l{i}", None) for i in range(3)])
        g.add_faces_many({s.id: faces(unit(rng, 1), model=f"m{exact_below}") for s in loners})
        row = g.search(probe, model_id=f"m{exact_below}", top_k=4)[0]
        assert row[0].subject_id == crowd.id
        assert {c.subject_id for c in row[1:]} == {s.id for s in loners}


def test_counts_follow_every_write_path(open_replica: Replica, pg_url: str, rng) -> None:
    g = open_replica().gallery
    s, t = g.create_subjects([("s", None), ("t", None)])
    g.add_faces(s.id, faces(unit(rng, 4)))
    recs = g.add_faces(t.id, faces(unit(rng, 2)) + faces(unit(rng, 1), model="m2"))
    g.delete_face(recs[0].id)
    assert (g.face_count(MODEL), g.face_count("m2"), g.subject_count()) == (5, 1, 2)
    g.delete_subject(s.id)  # cascaded face deletes are counted too
    assert (g.face_count(MODEL), g.face_count("m2"), g.subject_count()) == (1, 1, 1)
    with psycopg.connect(pg_url) as c:
        real: dict[str, int] = dict(c.execute("SELECT model_id, count(*) FROM faces GROUP BY model_id").fetchall())
    assert real == {MODEL: 1, "m2": 1} == g.stats().faces_by_model


def test_counts_stay_exact_under_concurrent_enrolment_and_spread_over_shards(
    open_replica: Replica, pg_url: str, rng: np.random.Generator
) -> None:
    a, b = open_replica().gallery, open_replica().gallery  # two replicas, four connections each
    subjects = a.create_subjects([(f"s{i}", None) for i in range(8)])
    vecs = unit(rng, 8 * 12)
    errors: list[BaseException] = []

    def writer(k: int) -> None:
        try:
            for j in range(12):
                (a if k % 2 else b).add_faces(subjects[k].id, faces(vecs[k * 12 + j : k * 12 + j + 1]))
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert (a.face_count(MODEL), b.face_count(MODEL), a.subject_count()) == (96, 96, 8)
    with psycopg.connect(pg_url) as c:
        shards = c.execute("SELECT count(*) FROM counts WHERE name = %s", ("model:" + MODEL,)).fetchone()
        real = c.execute("SELECT count(*) FROM faces").fetchone()
    assert real == (96,) and shards is not None and shards[0] > 1  # not one row every enrolment queues on


def test_counts_survive_the_migration_to_sharded_counts(open_replica: Replica, pg_url: str) -> None:
    from service.gallery.postgres.schema import MIGRATIONS

    with psycopg.connect(pg_url, autocommit=True) as c:  # a database at schema version 1 with two faces
        c.execute("CREATE EXTENSION IF NOT EXISTS vector")
        c.execute("CREATE TABLE facerec_schema (version integer PRIMARY KEY, applied_at timestamptz DEFAULT now())")
        c.execute(sql.SQL(MIGRATIONS[1]))
        c.execute("INSERT INTO facerec_schema (version) VALUES (1)")
        c.execute("INSERT INTO meta VALUES ('gallery_uuid', 'u1')")
        c.execute("INSERT INTO subjects (id, name, metadata, created_at, updated_at) VALUES ('s', 's', '{}', 0, 0)")
        c.execute(
            "INSERT INTO faces (subject_pk, model_id, embedding, created_at) "
            "SELECT 1, %s, (array_fill(0::real, ARRAY[127]) || 1::real)::vector, 0 FROM generate_series(1, 2)",
            (MODEL,),
        )
    g = open_replica().gallery
    assert (g.face_count(MODEL), g.subject_count()) == (2, 1)
    assert g.add_faces("s", faces(np.eye(128, dtype=np.float32)[:1]))[0].id == 3
    assert (g.face_count(MODEL), g.subject_count(), g.stats().faces_by_model) == (3, 1, {MODEL: 3})


def test_rejected_writes_leave_nothing(open_replica: Replica, rng: np.random.Generator) -> None:
    g = open_replica().gallery
    s = g.create_subject(name="a")
    bad = unit(rng, 2)
    bad[1] *= 2.0
    with pytest.raises(InvalidEmbedding):
        g.add_faces(s.id, faces(bad))
    with pytest.raises(SubjectNotFound):
        g.add_faces_many({s.id: faces(unit(rng, 1)), "nobody": faces(unit(rng, 1))})
    assert g.list_faces(s.id) == [] and g.face_count(MODEL) == 0
    r = g.add_faces(s.id, faces(unit(rng, 1)))[0]
    g.delete_face(r.id)
    assert g.add_faces(s.id, faces(unit(rng, 1)))[0].id > r.id  # ids are never reused


def test_reindex_stages_then_switches_atomically(open_replica: Replica, rng: np.random.Generator) -> None:
    a, b = open_replica().gallery, open_replica().gallery
    s = a.create_subject(name="a")
    crop = rng.integers(0, 255, (160, 160, 3), dtype=np.uint8)
    from service.gallery import NewFace

    recs = a.add_faces(s.id, [NewFace(v, "old", crop=crop) for v in unit(rng, 3)])
    assert a.reindex_counts("new") == {"faces": 3, "todo": 3, "staged": 0, "without_crop": 0}
    todo = a.crops_to_embed("new", 0, 10)
    assert [fid for fid, _ in todo] == [r.id for r in recs] and todo[0][1] == a.crop_png(recs[0].id)
    new = unit(rng, 3)
    assert b.stage_embeddings("new", [r.id for r in recs[:2]], new[:2]) == 2
    with pytest.raises(ReindexIncomplete) as e:
        a.switch_model("new")
    assert e.value.missing == 1 and a.face_count("old") == 3  # nothing changed
    a.delete_face(recs[2].id)  # the unstaged face goes: now every face is staged
    assert b.stage_embeddings("new", [recs[2].id], new[2:]) == 0  # an erased face is skipped
    assert a.switch_model("new") == 2
    assert b.face_count("new") == 2 and b.face_count("old") == 0
    hit = b.search(new[1], model_id="new", top_k=1)[0][0]
    assert hit.face_id == recs[1].id and hit.distance < 1e-3
    with pytest.raises(ModelMismatch):
        b.search(new[1], model_id="old")
    assert a.reindex_counts("new") == {"faces": 2, "todo": 0, "staged": 0, "without_crop": 0}


def test_every_advisory_lock_key_is_distinct() -> None:
    """Two jobs sharing a key exclude each other for nothing (the Milvus reconcile once kept the photo library's
    maintenance from running, and the outbox install shared the photo writes' key)."""
    from service.gallery.postgres import locks

    assert len(set(locks.ONE_KEY)) == len(locks.ONE_KEY)
    assert all(-(2**63) <= k < 2**63 for k in locks.ONE_KEY) and -(2**31) <= locks.SUBJECT_WRITES < 2**31
    names = [n for n in vars(locks) if n.isupper() and n not in ("ONE_KEY", "SUBJECT_WRITES")]
    assert sorted(getattr(locks, n) for n in names) == sorted(locks.ONE_KEY)  # none left out of the check
