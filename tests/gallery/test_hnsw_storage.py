"""HNSW vector storage: fp16 (the default, half the memory) and float32 (older snapshots), converted at open."""

from __future__ import annotations

import faiss
import numpy as np
import pytest

from service.gallery.snapshot import read_header, snapshot_path
from tests.gallery.conftest import MODEL, faces, unit


def _main(g):
    return g.cache.models[MODEL].main


def _graph(seg) -> np.ndarray:
    index = faiss.downcast_index(seg.index.index)
    assert isinstance(index, faiss.IndexHNSW)  # downcast_index is typed as returning the base Index
    # faiss's stub lists HNSW.graph, which does not exist; the adjacency lists are HNSW.neighbors
    return faiss.vector_to_array(index.hnsw.neighbors)  # type: ignore[attr-defined]


def _clustered(rng, people: int, per: int) -> np.ndarray:
    centres = unit(rng, people)
    x = np.repeat(centres, per, axis=0) + 0.7 * rng.standard_normal((people * per, 128)).astype(np.float32) / 11.3
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.mark.parametrize("storage", ["fp16", "sq8"])
def test_new_hnsw_finds_the_exact_nearest(make_gallery, rng, storage):
    g = make_gallery(hnsw_threshold=500, hnsw_storage=storage)
    subjects = g.create_subjects([(f"p{i}", None) for i in range(200)])
    vecs = _clustered(rng, 200, 10)
    recs = g.add_faces_many({s.id: faces(vecs[i * 10 : i * 10 + 10]) for i, s in enumerate(subjects)})
    g.maintain()
    main = _main(g)
    assert main is not None and main.storage == storage
    assert main.decoded().dtype == np.float32 and main._codes().shape == (2000, 256 if storage == "fp16" else 128)
    probes = vecs[::10] + 0.3 * unit(rng, 200)
    probes /= np.linalg.norm(probes, axis=1, keepdims=True)
    exact = np.argmin(((probes[:, None, :] - vecs[None, :, :]) ** 2).sum(-1), axis=1)
    exact_d = np.sqrt(((probes - vecs[exact]) ** 2).sum(-1))
    got = g.search(probes, model_id=MODEL, top_k=1)
    ids = np.array([r[0].face_id for r in got])
    assert (ids == np.array([recs[i].id for i in exact])).mean() >= 0.99
    # fp16: distances from half-precision codes stay within ~1e-3 of float32 ones; sq8: re-ranked exactly
    dist = np.array([r[0].distance for r in got])
    assert np.abs(dist - exact_d).max() < (2e-3 if storage == "fp16" else 1e-5)
    assert g.cache.models[MODEL].approximate == (storage == "sq8")


def test_float32_snapshot_is_converted_at_open_without_a_rebuild(make_gallery, rng, tmp_path):
    data = tmp_path / "data"
    g = make_gallery(hnsw_threshold=300, hnsw_storage="float32")
    s = g.create_subject(name="A")
    vecs = unit(rng, 500)
    recs = g.add_faces(s.id, faces(vecs))
    g.maintain()
    assert _main(g).storage == "float32"
    for r in recs[:5]:
        g.delete_face(r.id)  # tombstones in the float32 main
    g.save_snapshot()
    graph = _graph(_main(g))
    before = g.search(vecs[5:60], model_id=MODEL, top_k=3)
    old_size = snapshot_path(data, MODEL).stat().st_size
    g.close()

    progress: list[tuple[str, int, int]] = []
    g = make_gallery(progress=lambda *a: progress.append(a))  # default storage: fp16
    assert not progress  # loaded and converted, not rebuilt from SQLite
    main = _main(g)
    assert main.storage == "fp16" and len(main.tombstones) == 5
    np.testing.assert_array_equal(_graph(main), graph)  # the same graph
    assert set(g.index_ids(MODEL).tolist()) == {r.id for r in recs[5:]}
    after = g.search(vecs[5:60], model_id=MODEL, top_k=3)
    assert [[c.face_id for c in r] for r in after] == [[c.face_id for c in r] for r in before]
    for a, b in zip(after, before, strict=True):
        assert abs(a[0].distance - b[0].distance) < 2e-3
    erased = g.search(vecs[:5], model_id=MODEL, top_k=5)
    assert not {c.face_id for r in erased for c in r} & {r.id for r in recs[:5]}
    assert g.cache.unsaved > 0  # the converted index is due for a snapshot
    g.close()  # saves it

    meta, _ = read_header(snapshot_path(data, MODEL))
    assert meta["segments"][0]["kind"] == "hnsw"
    assert snapshot_path(data, MODEL).stat().st_size < 0.75 * old_size  # 256 instead of 512 bytes a vector
    g = make_gallery()
    assert _main(g).storage == "fp16" and g.cache.unsaved == 0  # nothing left to convert
    assert set(g.index_ids(MODEL).tolist()) == {r.id for r in recs[5:]}
    g.close()

    g.close()
    for storage in ("sq8", "float32"):  # an fp16 snapshot read by another configuration: converted again
        g = make_gallery(hnsw_storage=storage)
        assert _main(g).storage == storage
        np.testing.assert_array_equal(_graph(_main(g)), graph)
        assert [c.face_id for c in g.search(vecs[7], model_id=MODEL, top_k=1)[0]] == [recs[7].id]
        assert not {c.face_id for r in g.search(vecs[:5], model_id=MODEL, top_k=5) for c in r} & {
            r.id for r in recs[:5]
        }
        g.close()


@pytest.mark.parametrize("storage", ["fp16", "sq8"])
def test_erased_codes_leave_the_snapshot(make_gallery, rng, tmp_path, storage):
    data = tmp_path / "data"
    g = make_gallery(hnsw_threshold=100, hnsw_storage=storage)
    s = g.create_subject(name="A")
    g.add_faces(g.create_subject(name="B").id, faces(unit(rng, 150)))
    secret = unit(rng, 2)
    recs = g.add_faces(s.id, faces(secret))
    g.maintain()
    g.save_snapshot()
    main = _main(g)
    pos = np.flatnonzero(np.isin(main.ids(), [r.id for r in recs]))
    codes = [main._codes()[p].tobytes() for p in pos]
    assert len(codes) == 2 and all(len(c) == (256 if storage == "fp16" else 128) for c in codes)
    snap = snapshot_path(data, MODEL)
    assert all(c in snap.read_bytes() for c in codes)  # the probe is meaningful
    g.delete_subject(s.id)
    assert not {c.face_id for row in g.search(secret, model_id=MODEL, top_k=5) for c in row} & {r.id for r in recs}
    g.save_snapshot()
    assert not any(c in snap.read_bytes() for c in codes)


def test_storage_for_the_size() -> None:
    from service.gallery.segment import IndexParams

    never = IndexParams(hnsw_storage="fp16")
    assert never.storage_for(10**7) == "fp16" and never.storage_for(10, "sq8") == "fp16"
    sized = IndexParams(hnsw_storage="fp16", sq8_from=1000)
    assert sized.storage_for(999) == "fp16" and sized.storage_for(1000) == "sq8"
    assert sized.storage_for(10, "sq8") == "sq8"  # once sq8, it stays: no conversions back and forth
    assert sized.storage_for(10) == "fp16"  # a new build below the size


def test_a_main_that_grows_to_sq8_from_becomes_sq8_and_stays_exact(make_gallery, rng, tmp_path):
    """Built as fp16 at 1,000 faces; merges take it to 2,000 (``sq8_from`` 1,500): the next maintenance
    converts it to sq8, keeping its graph, the answers stay exact (re-ranked) and a reopened gallery stays sq8."""
    kw = {"hnsw_threshold": 500, "sq8_from": 1500, "merge_batch": 100}
    g = make_gallery(**kw)
    subjects = g.create_subjects([(f"p{i}", None) for i in range(200)])
    vecs = _clustered(rng, 200, 10)
    recs = []
    for half in (range(0, 100), range(100, 200)):
        recs += g.add_faces_many({subjects[i].id: faces(vecs[i * 10 : i * 10 + 10]) for i in half})
        g.maintain()
        if half.start == 0:
            assert _main(g).storage == "fp16" and _main(g).live == 1000
    main = _main(g)
    assert main.storage == "sq8" and main.live == 2000
    probes = vecs[5::10] + 0.2 * unit(rng, 200)
    probes /= np.linalg.norm(probes, axis=1, keepdims=True)
    exact = np.argmin(((probes[:, None, :] - vecs[None, :, :]) ** 2).sum(-1), axis=1)
    got = g.search(probes, model_id=MODEL, top_k=1)
    assert (np.array([r[0].face_id for r in got]) == np.array([recs[i].id for i in exact])).mean() >= 0.99
    exact_d = np.sqrt(((probes - vecs[exact]) ** 2).sum(-1))
    assert np.abs(np.array([r[0].distance for r in got]) - exact_d).max() < 1e-5
    g.close()
    again = make_gallery(**kw)
    assert _main(again).storage == "sq8" and _main(again).live == 2000
