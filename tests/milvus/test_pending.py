"""Faces pending in the outbox (committed in PostgreSQL, not yet in Milvus) and each replica's in-memory copy of
them (service/gallery/milvus/pending.py): a search with a backlog finds exactly what brute force over every face
finds; enrolments and erasures by another replica reach the copy at its next search; a transaction that commits
late is not lost; above the copy's cap the pending faces are compared in PostgreSQL; an outbox of version 1 is
upgraded in place with its rows kept."""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import psycopg

from service.gallery.milvus import MilvusGallery, outbox
from service.gallery.milvus.pending import PendingFaces
from service.gallery.milvus.reconcile import reconcile
from service.gallery.postgres.gallery import PostgresGallery
from service.gallery.types import Subject
from tests.milvus.conftest import OpenReplica
from tests.milvus.helpers import MODEL, faces, unit


def _gallery(open_replica: OpenReplica) -> MilvusGallery:
    g = open_replica().gallery
    assert isinstance(g, MilvusGallery)
    return g


def _enrol(g: MilvusGallery, subjects: Sequence[Subject], vecs: npt.NDArray[np.float32], *, drain: bool) -> None:
    """Face ``i`` into ``subjects[i % len(subjects)]``; without ``drain``, as a writer that died before draining."""
    batch = {s.id: faces(vecs[i :: len(subjects)]) for i, s in enumerate(subjects)}
    if drain:
        g.add_faces_many(batch)
    else:
        PostgresGallery.add_faces_many(g, batch)


def _expected(
    vecs: npt.NDArray[np.float32], owners: Sequence[str], probe: npt.NDArray[np.float32], top_k: int
) -> list[str]:
    """The ``top_k`` nearest subjects by brute force over ``vecs`` (face ``i`` belongs to ``owners[i]``)."""
    out: list[str] = []
    for i in np.argsort(np.linalg.norm(vecs - probe, axis=1)):
        if owners[i] not in out:
            out.append(owners[i])
        if len(out) == top_k:
            break
    return out


def test_search_with_a_backlog_matches_brute_force(open_replica: OpenReplica, rng: np.random.Generator) -> None:
    g = _gallery(open_replica)
    subjects = g.create_subjects([(f"s{i}", None) for i in range(40)])
    indexed, pending = unit(rng, 200), unit(rng, 600)
    _enrol(g, subjects, indexed, drain=True)
    _enrol(g, subjects, pending, drain=False)
    assert g.pending() == 600
    vecs = np.concatenate([indexed, pending])
    owners = [subjects[i % 40].id for i in range(200)] + [subjects[i % 40].id for i in range(600)]
    probes = np.concatenate([pending[:5], indexed[:3], unit(rng, 4)])
    got = g.search(probes, model_id=MODEL, top_k=5)
    for p, row in zip(probes, got, strict=True):
        assert [c.subject_id for c in row] == _expected(vecs, owners, p, 5)
    assert got[0][0].distance < 1e-3
    assert g.pending_faces.size(MODEL) == 600  # compared in memory, not read again from PostgreSQL
    g.drain()
    assert [c.subject_id for c in g.search(probes[:1], model_id=MODEL, top_k=5)[0]] == [c.subject_id for c in got[0]]
    assert g.pending_faces.size(MODEL) == 0  # the copy goes with the backlog
    assert reconcile(g).differences == 0


def test_other_replicas_writes_reach_the_copy(open_server_replica: OpenReplica, rng: np.random.Generator) -> None:
    """Replica A enrols and erases faces without draining them (the backlog stays); replica B, which holds a copy
    of the pending faces, sees each change at its next search and never returns an erased face."""
    a, b = _gallery(open_server_replica), _gallery(open_server_replica)
    subjects = a.create_subjects([(f"s{i}", None) for i in range(10)])
    first = unit(rng, 100)
    _enrol(a, subjects, first, drain=False)
    assert b.search(first[:1], model_id=MODEL, top_k=1)[0][0].subject_id == subjects[0].id
    assert b.pending_faces.size(MODEL) == 100
    late = a.create_subject(name="late")
    more = unit(rng, 3)
    PostgresGallery.add_faces_many(a, {late.id: faces(more)})
    hit = b.search(more[2:3], model_id=MODEL, top_k=1)[0][0]
    assert hit.subject_id == late.id and hit.distance < 1e-3
    PostgresGallery.delete_subject(a, subjects[0].id)  # pending faces erased, still in B's copy until it refreshes
    got = b.search(first[:1], model_id=MODEL, top_k=10)[0]
    assert subjects[0].id not in {c.subject_id for c in got} and len(got) == 10
    with a._conn() as conn:  # part of the backlog drained meanwhile: the rest is still compared in memory
        outbox.drain_once(conn, a.engine, limit=50)
    assert b.pending() > 0
    for i in (1, 55, 99):
        hit = b.search(first[i : i + 1], model_id=MODEL, top_k=1)[0][0]
        assert hit.subject_id == subjects[i % 10].id and hit.distance < 1e-3
    a.drain()
    assert b.search(more[:1], model_id=MODEL, top_k=1)[0][0].subject_id == late.id
    assert b.pending_faces.size(MODEL) == 0


def test_a_late_commit_is_not_lost(open_server_replica: OpenReplica, pg_url: str, rng: np.random.Generator) -> None:
    """A transaction takes its outbox row's ``seq`` first and commits last: meanwhile later rows are committed and
    drained and B refreshes its copy twice. Once it commits, B finds its face (the copy's horizon waited for it)."""
    a, b = _gallery(open_server_replica), _gallery(open_server_replica)
    s = a.create_subject(name="s")
    vecs = unit(rng, 5)
    [lost] = PostgresGallery.add_faces_many(a, {s.id: faces(vecs[4:5])})
    with a._conn() as conn:  # in PostgreSQL, neither in Milvus nor pending: found once its row commits
        conn.execute("DELETE FROM vector_outbox WHERE face_id = %s", (lost.id,))
    PostgresGallery.add_faces_many(a, {s.id: faces(vecs[:1])})  # row 1: pending
    with psycopg.connect(pg_url) as slow, slow.transaction():
        slow.execute("INSERT INTO vector_outbox (face_id, model_id) VALUES (%s, %s)", (lost.id, MODEL))  # row 2
        PostgresGallery.add_faces_many(a, {s.id: faces(vecs[2:4])})  # rows 3, 4
        assert b.search(vecs[:1], model_id=MODEL, top_k=1)[0][0].distance < 1e-3  # B loads rows 1, 3, 4
        with a._conn() as conn:
            outbox.drain_once(conn, a.engine, limit=2)  # rows 1 and 3, the oldest it sees
        assert b.search(vecs[3:4], model_id=MODEL, top_k=1)[0][0].distance < 1e-3  # oldest row now: 4
        assert b.pending_faces.size(MODEL) > 0
    hit = b.search(vecs[4:5], model_id=MODEL, top_k=1)[0][0]
    assert hit.face_id == lost.id and hit.distance < 1e-3


def test_concurrent_searches_while_another_replica_writes(
    open_server_replica: OpenReplica, rng: np.random.Generator
) -> None:
    """Three threads search on B (one copy, refreshed by whichever search comes first) while A enrols faces without
    draining them, erases subjects and drains part of the backlog now and then: every face acknowledged and not
    erased before a search began is found by it, no subject erased before it began is returned."""
    a, b = _gallery(open_server_replica), _gallery(open_server_replica)
    a.add_faces(a.create_subject(name="seed").id, faces(unit(rng, 1)))  # the collection exists and is loaded
    acked: list[tuple[str, int, npt.NDArray[np.float32]]] = []
    erased: set[str] = set()
    failures: list[str] = []
    stop = threading.Event()

    def search(seed: int) -> None:
        r = np.random.default_rng(seed)
        while not stop.is_set():
            if not acked:
                continue
            known, gone = list(acked), set(erased)
            sid, fid, v = known[int(r.integers(len(known)))]
            try:
                got = b.search(v[None], model_id=MODEL, top_k=3)[0]
            except Exception as e:
                failures.append(f"{type(e).__name__}: {e}")
                return
            if gone & {c.subject_id for c in got}:
                failures.append(f"erased subject returned: {gone & {c.subject_id for c in got}}")
            if sid not in gone and sid not in erased and (not got or got[0].face_id != fid):
                failures.append(f"face {fid} of {sid} missed: {got[:1]}")

    threads = [threading.Thread(target=search, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    try:
        for i in range(60):
            s = a.create_subject(name=f"c{i}")
            vecs = unit(rng, 2)
            recs = PostgresGallery.add_faces_many(a, {s.id: faces(vecs)})
            acked.extend((s.id, r.id, v) for r, v in zip(recs, vecs, strict=True))
            if i % 7 == 3:
                victim = str(rng.choice(sorted({sid for sid, _, _ in acked} - erased)))
                PostgresGallery.delete_subject(a, victim)
                erased.add(victim)
            if i % 10 == 9:
                with a._conn() as conn:
                    outbox.drain_once(conn, a.engine, limit=15)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=60)
    assert not failures, failures[:5]
    assert b.pending() > 0 and b.pending_faces.size(MODEL) > 0


def test_above_the_cap_pending_faces_are_compared_in_postgresql(
    open_replica: OpenReplica, rng: np.random.Generator
) -> None:
    g = _gallery(open_replica)
    g.pending_faces = PendingFaces(cap=100)
    subjects = g.create_subjects([(f"s{i}", None) for i in range(20)])
    vecs = unit(rng, 300)
    _enrol(g, subjects, vecs, drain=False)
    owners = [subjects[i % 20].id for i in range(300)]
    probes = np.concatenate([vecs[[7, 150]], unit(rng, 2)])
    got = g.search(probes, model_id=MODEL, top_k=4)
    for p, row in zip(probes, got, strict=True):
        assert [c.subject_id for c in row] == _expected(vecs, owners, p, 4)
    assert g.pending_faces.size(MODEL) == 0  # not held in memory
    with g._conn() as conn:
        outbox.drain_once(conn, g.engine, limit=260)  # 40 left: below half the cap
    g.search(probes, model_id=MODEL, top_k=4)  # the last search in PostgreSQL; the next loads the copy
    assert [c.subject_id for c in g.search(probes, model_id=MODEL, top_k=4)[1]] == _expected(vecs, owners, probes[1], 4)
    assert g.pending_faces.size(MODEL) == 40


def test_outbox_of_version_1_is_upgraded_with_its_rows(open_replica: OpenReplica, rng: np.random.Generator) -> None:
    g = _gallery(open_replica)
    s = g.create_subject(name="s")
    vecs = unit(rng, 3)
    PostgresGallery.add_faces_many(g, {s.id: faces(vecs)})
    with g._conn() as conn:  # as a version-1 replica left it
        conn.execute("ALTER TABLE vector_outbox DROP COLUMN txid")
        conn.execute("UPDATE meta SET value = '1' WHERE key = 'milvus_outbox_version'")
        assert outbox.install(conn)
        assert conn.execute("SELECT value FROM meta WHERE key = 'milvus_outbox_version'").fetchone() == (
            str(outbox.OUTBOX_VERSION),
        )
        assert not outbox.install(conn)
    assert g.pending() == 3  # kept, not queued again
    assert g.search(vecs[2:3], model_id=MODEL, top_k=1)[0][0].distance < 1e-3
    g.drain()
    assert reconcile(g).differences == 0
