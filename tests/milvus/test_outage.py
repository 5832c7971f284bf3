"""The real Milvus server frozen (SIGSTOP: unreachable, calls time out) and thawed while a replica serves:
searches and enrolments answer :class:`VectorIndexUnavailable` (HTTP 503 ``vector_index_unavailable``) and store
nothing, erasure keeps working, and service resumes by itself when Milvus is back: every acknowledged face found,
no erased face returned, reconcile finds 0 differences.

A frozen server rather than a killed one: the embedded 2.3.5 server (the ``milvus`` package) restarted on the same
data dir after a stop was seen to hang for minutes while its coordinators waited on their old sessions
(docs/MILVUS.md, Faults)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import numpy as np
import pytest

from service.errors import domain_status
from service.gallery.errors import FaceNotFound, VectorIndexUnavailable
from service.gallery.milvus import MilvusGallery
from service.gallery.milvus.reconcile import reconcile
from tests.milvus.conftest import OpenReplica
from tests.milvus.helpers import MODEL, faces, unit
from tests.milvusfixtures import MilvusServer


def test_vector_index_unavailable_is_a_503() -> None:
    assert domain_status(VectorIndexUnavailable("down")) == (503, "vector_index_unavailable")


def test_milvus_unreachable_then_back(
    open_server_replica: OpenReplica, milvus_server: MilvusServer, rng: np.random.Generator
) -> None:
    g = open_server_replica(sync_interval_s=0.5).gallery
    assert isinstance(g, MilvusGallery)
    vecs = unit(rng, 40)
    subs = g.create_subjects([(f"s{i}", None) for i in range(20)])
    acked = g.add_faces_many({s.id: faces(vecs[i : i + 1]) for i, s in enumerate(subs)})
    milvus_server.pause()
    try:
        with pytest.raises(VectorIndexUnavailable):
            g.search(vecs[:1], model_id=MODEL)
        before = g.face_count(MODEL)
        for i in range(3):
            with pytest.raises(VectorIndexUnavailable):
                g.add_faces(subs[0].id, faces(vecs[20 + i : 21 + i]))
        assert g.face_count(MODEL) == before  # nothing acknowledged, nothing left behind
        g.delete_subject(subs[1].id)  # erasure works while Milvus is down
        erased = acked[1].id
    finally:
        milvus_server.resume()
    deadline = time.monotonic() + 60
    while True:
        try:
            got = g.search(vecs, model_id=MODEL, top_k=1)
            break
        except VectorIndexUnavailable:
            assert time.monotonic() < deadline, "service did not resume within 60 s of Milvus being back"
            time.sleep(0.5)
    for i, rec in enumerate(acked):
        if rec.id == erased:
            assert all(c.face_id != erased for c in got[i])
        else:
            assert got[i][0].face_id == rec.id
    assert g.search(vecs[20:23], model_id=MODEL, top_k=1)[0][0].distance > 1e-3  # the refused faces are not there
    [late] = g.add_faces(subs[0].id, faces(vecs[30:31]))
    assert g.search(vecs[30:31], model_id=MODEL, top_k=1)[0][0].face_id == late.id
    deadline = time.monotonic() + 30
    while g.pending():
        assert time.monotonic() < deadline
        time.sleep(0.5)
    assert reconcile(g).differences == 0


def test_a_frozen_server_answers_unavailable_within_the_timeout(
    open_server_replica: OpenReplica, milvus_server: MilvusServer, rng: np.random.Generator
) -> None:
    """A replica that has not touched the collection yet (it checks that it exists first) must not wait on a frozen
    server for ever: identify answers 503 within the timeout (3 s here), an erasure returns, reconcile fails."""
    a = open_server_replica().gallery
    b = open_server_replica().gallery
    assert isinstance(a, MilvusGallery) and isinstance(b, MilvusGallery)
    vecs = unit(rng, 3)
    s = a.create_subject(name="x")
    recs = a.add_faces(s.id, faces(vecs))
    b.engine.ping()  # connected; nothing known about the collection
    outcome: dict[str, object] = {}

    def timed(what: str, fn: Callable[[], object]) -> threading.Thread:
        def run() -> None:
            t0 = time.monotonic()
            try:
                fn()
                outcome[what] = time.monotonic() - t0
            except VectorIndexUnavailable:
                outcome[what] = ("unavailable", time.monotonic() - t0)

        th = threading.Thread(target=run, daemon=True)
        th.start()
        return th

    milvus_server.pause()
    try:
        calls = [
            timed("search", lambda: b.search(vecs[:1], model_id=MODEL)),
            timed("erase", lambda: b.delete_face(recs[0].id)),
            timed("reconcile", lambda: reconcile(b)),
        ]
        deadline = time.monotonic() + 7  # well inside the server's session TTL (15 s)
        for th in calls:
            th.join(max(0.0, deadline - time.monotonic()))
    finally:
        milvus_server.resume()
    assert isinstance(outcome.get("search"), tuple), f"search still waiting on a frozen Milvus: {outcome}"
    assert isinstance(outcome.get("reconcile"), tuple), f"reconcile still waiting on a frozen Milvus: {outcome}"
    assert "erase" in outcome, f"erasure still waiting on a frozen Milvus: {outcome}"
    with pytest.raises(FaceNotFound):
        a.get_face(recs[0].id)
