"""Background maintenance: HNSW conversion, compaction of tombstones, snapshots when due, idle close."""

from __future__ import annotations

import time

from service.gallery import GallerySettings, IndexParams, LocalGallery
from service.gallery.snapshot import snapshot_path
from tests.gallery.conftest import MODEL, faces, unit


def _wait(cond, timeout: float = 20.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.05)
    return False


def test_background_thread_converts_and_snapshots(tmp_path, rng):
    settings = GallerySettings(
        index=IndexParams(hnsw_threshold=300),
        snapshot_every_changes=100,
        erasure_snapshot_delay_s=0.2,
        maintenance_tick_s=0.05,
    )
    g = LocalGallery(tmp_path / "data", settings)
    try:
        s = g.create_subject(name="A")
        v = unit(rng, 400)
        recs = g.add_faces(s.id, faces(v))
        assert _wait(lambda: g.stats().indexes[MODEL].kind == "hnsw")
        path = snapshot_path(tmp_path / "data", MODEL)
        assert _wait(lambda: path.exists() and g.stats().snapshots[MODEL].max_face_id == recs[-1].id)
        assert g.search(v[17], model_id=MODEL, top_k=1)[0][0].face_id == recs[17].id
        before = path.stat().st_mtime_ns
        g.delete_face(recs[17].id)
        # the erasure is followed by a prompt snapshot that no longer holds the embedding
        assert _wait(lambda: path.stat().st_mtime_ns != before)
        assert v[17].astype("<f4").tobytes() not in path.read_bytes()
    finally:
        g.close()


def test_tombstones_are_compacted(make_gallery, rng):
    g = make_gallery(hnsw_threshold=200)
    s = g.create_subject(name="A")
    recs = g.add_faces(s.id, faces(unit(rng, 400)))
    g.maintain()
    for r in recs[:60]:
        g.delete_face(r.id)
    info = g.stats().indexes[MODEL]
    assert info.kind == "hnsw" and info.tombstones == 60
    g.maintain()  # 60 > 10 % of 400: rebuilt without them
    info = g.stats().indexes[MODEL]
    assert info.tombstones == 0 and info.live == 340 and info.kind == "hnsw"
    assert set(g.index_ids(MODEL).tolist()) == {r.id for r in recs[60:]}


def test_close_without_changes_keeps_the_snapshot(make_gallery, rng, tmp_path):
    g = make_gallery()
    s = g.create_subject(name="A")
    g.add_faces(s.id, faces(unit(rng, 10)))
    g.close()
    path = snapshot_path(tmp_path / "data", MODEL)
    stamp = path.stat().st_mtime_ns
    g = make_gallery()
    assert g.stats().snapshots[MODEL].max_face_id == 10
    g.close()
    assert path.stat().st_mtime_ns == stamp
