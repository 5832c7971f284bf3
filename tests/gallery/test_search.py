"""Embedded search (FAISS): flat vs HNSW, erasures as tombstones, recall, maintenance under concurrent readers.
Backend-independent search behaviour (top-k grouping, model ids, empty galleries) is in tests/gallery/contract."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from tests.gallery.conftest import MODEL, faces, unit


def _enrol(g, rng, subjects: int, per: int, noise: float = 0.3):
    """``subjects`` people with ``per`` noisy faces each around a random centre; returns (ids, centres)."""
    centres = unit(rng, subjects)
    batch: dict[str, list] = {}
    ids: list[str] = []
    for c in centres:
        s = g.create_subject(name=f"s{len(ids)}")
        x = c + noise * unit(rng, per) / np.sqrt(128) * 4
        batch[s.id] = faces(x / np.linalg.norm(x, axis=1, keepdims=True))
        ids.append(s.id)
    g.add_faces_many(batch)
    return ids, centres


@pytest.mark.parametrize("hnsw", [False, True])
def test_deleted_faces_never_returned(make_gallery, rng, hnsw):
    g = make_gallery(hnsw_threshold=500)
    ids, _centres = _enrol(g, rng, subjects=200, per=4)
    if hnsw:
        g.maintain()
        assert g.stats().indexes[MODEL].kind == "hnsw"
    victims = ids[:20]
    face_ids = [f.id for s in victims for f in g.list_faces(s)]
    embs = np.concatenate([g.face_embeddings(s, model_id=MODEL) for s in victims])
    for s in victims[:10]:
        assert g.delete_subject(s) == 4
    for s in victims[10:]:
        for f in g.list_faces(s):
            g.delete_face(f.id)
    res = g.search(embs, model_id=MODEL, top_k=10)
    returned = {c.face_id for row in res for c in row} | {c.subject_id for row in res for c in row}
    assert not returned & (set(face_ids) | set(victims))
    assert all(len(r) == 10 for r in res)
    assert set(g.index_ids(MODEL)) == set(g.store.face_ids(MODEL))


def test_hnsw_recall_against_flat(make_gallery, rng):
    g = make_gallery(hnsw_threshold=1000)
    _, centres = _enrol(g, rng, subjects=600, per=3)
    probes = centres + 0.02 * unit(rng, len(centres))
    probes /= np.linalg.norm(probes, axis=1, keepdims=True)
    exact = [r[0].face_id for r in g.search(probes, model_id=MODEL, top_k=1)]
    g.maintain()
    assert g.stats().indexes[MODEL].kind == "hnsw"
    approx = [r[0].face_id for r in g.search(probes, model_id=MODEL, top_k=1)]
    assert np.mean(np.array(exact) == np.array(approx)) >= 0.99
    # adds after the conversion land in flat segments, are searchable, and merge into HNSW
    s = g.create_subject(name="late")
    late = unit(rng, 20)
    recs = g.add_faces(s.id, faces(late))
    assert g.search(late[5], model_id=MODEL, top_k=1)[0][0].face_id == recs[5].id
    idx = g.cache.models[MODEL]
    while idx.merge_step():
        pass
    assert g.stats().indexes[MODEL].flat == 0
    assert g.search(late[5], model_id=MODEL, top_k=1)[0][0].face_id == recs[5].id


def test_concurrent_readers_during_writes(make_gallery, rng):
    g = make_gallery(hnsw_threshold=300)
    _enrol(g, rng, subjects=100, per=2)
    probes = unit(rng, 16)
    errors: list[BaseException] = []
    stop = threading.Event()
    searches = [0]

    def reader() -> None:
        try:
            while not stop.is_set():
                for row in g.search(probes, model_id=MODEL, top_k=3):
                    d = [c.distance for c in row]
                    assert d == sorted(d) and all(0 <= x <= 2.0001 for x in d)
                searches[0] += 1
        except BaseException as e:  # surfaced below
            errors.append(e)

    threads = [threading.Thread(target=reader) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        wrng = np.random.default_rng(7)
        for i in range(40):
            s = g.create_subject(name=f"w{i}")
            v = unit(wrng, 3)
            recs = g.add_faces(s.id, faces(v))
            if i % 3 == 0:
                g.delete_face(recs[0].id)
                hit = g.search(v[0], model_id=MODEL, top_k=5)[0]
                assert recs[0].id not in {c.face_id for c in hit}
            if i == 20:
                g.maintain()  # HNSW conversion while readers run
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not errors, errors
    assert searches[0] > 0
    assert set(g.index_ids(MODEL)) == set(g.store.face_ids(MODEL))


@pytest.mark.parametrize("hnsw_threshold", [50_000, 20], ids=["flat", "hnsw"])
def test_face_count_matches_sqlite_after_adds_and_deletes(make_gallery, rng, hnsw_threshold):
    g = make_gallery(hnsw_threshold=hnsw_threshold)
    a, b = g.create_subject(name="a"), g.create_subject(name="b")
    added = g.add_faces(a.id, faces(unit(rng, 30)))
    g.add_faces(b.id, faces(unit(rng, 10)))
    g.maintain()  # with the small threshold this builds HNSW, where erasures become tombstones
    assert g.stats().indexes[MODEL].kind == ("hnsw" if hnsw_threshold == 20 else "flat")
    g.delete_face(added[0].id)
    g.delete_subject(b.id)
    assert g.face_count(MODEL) == g.stats().faces_by_model[MODEL] == 29
    assert g.face_count("another-model") == 0
    assert g.subject_count() == 1
