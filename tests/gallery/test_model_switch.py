"""Gallery level of a re-index: stored crops, staged embeddings of another model, the atomic switch, and what
the index and its snapshots hold afterwards (synthetic unit vectors; the real pipeline is tested in
tests/service/test_models_reindex.py)."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from service.gallery import LocalGallery, ModelMismatch, NewFace, ReindexIncomplete
from service.gallery.crops import decode_crop
from tests.gallery.conftest import MODEL, unit

NEW = "ft-test-20261123000000"


def _crops(rng: np.random.Generator, n: int) -> list[np.ndarray]:
    return [rng.integers(0, 256, (160, 160, 3), dtype=np.uint8) for _ in range(n)]


def _enrol(g: LocalGallery, rng: np.random.Generator, n: int) -> tuple[list[int], np.ndarray, list[np.ndarray]]:
    sid = g.create_subject(name="a").id
    vecs, crops = unit(rng, n), _crops(rng, n)
    recs = g.add_faces(sid, [NewFace(v, MODEL, crop=c) for v, c in zip(vecs, crops, strict=True)])
    return [r.id for r in recs], vecs, crops


@pytest.mark.parametrize("close_before_reopen", [True, False])
def test_switch_moves_every_face_and_survives_reopen(
    make_gallery: Callable[..., LocalGallery], rng: np.random.Generator, tmp_path: Path, close_before_reopen: bool
) -> None:
    g = make_gallery()
    ids, old, crops = _enrol(g, rng, 20)
    g.save_snapshot()
    assert all(np.array_equal(decode_crop(g.store.crop_png(i) or b""), c) for i, c in zip(ids, crops, strict=True))
    new = unit(rng, 20)
    assert g.stage_embeddings(NEW, ids[:12], new[:12]) == 12
    with pytest.raises(ReindexIncomplete, match="8 of 20 faces"):
        g.switch_model(NEW)
    assert g.search(old[15], model_id=MODEL, top_k=1)[0][0].face_id == ids[15]  # the old model still serves
    with pytest.raises(ModelMismatch):
        g.search(new[0], model_id=NEW, top_k=1)
    assert g.stage_embeddings(NEW, ids[12:], new[12:]) == 8
    assert g.switch_model(NEW) == 20
    assert g.stats().faces_by_model == {NEW: 20}
    assert list(g.index_ids(NEW)) == ids and len(g.index_ids(MODEL)) == 0
    for i in (0, 13, 19):
        assert g.search(new[i], model_id=NEW, top_k=1)[0][0].face_id == ids[i]
    with pytest.raises(ModelMismatch):
        g.search(old[0], model_id=MODEL, top_k=1)
    if close_before_reopen:
        g.close()
    else:  # a crash after the switch committed: no snapshot of the new model, the old one is stale
        g.store.close()
        g._lock.release()
        g._closed = True
    g2 = make_gallery()
    assert list(g2.index_ids(NEW)) == ids and g2.stats().faces_by_model == {NEW: 20}
    assert g2.search(new[7], model_id=NEW, top_k=1)[0][0].face_id == ids[7]
    g2.save_snapshot()
    snaps = sorted(p.name for p in (tmp_path / "data" / "index").glob("*.snap"))
    assert len(snaps) == 1 and snaps[0].startswith(NEW), snaps
    with sqlite3.connect(tmp_path / "data" / "gallery.sqlite3") as conn:
        assert conn.execute("SELECT count(*) FROM face_embeddings").fetchone()[0] == 0
        assert conn.execute("SELECT count(*) FROM face_crops").fetchone()[0] == 20


def test_staging_skips_erased_faces_and_erasure_cascades(
    make_gallery: Callable[..., LocalGallery], rng: np.random.Generator, tmp_path: Path
) -> None:
    g = make_gallery()
    ids, _, _ = _enrol(g, rng, 4)
    g.delete_face(ids[0])
    assert g.stage_embeddings(NEW, ids, unit(rng, 4)) == 3  # the erased face gets no staged row
    counts = g.store.reindex_counts(NEW)
    assert counts == {"faces": 3, "todo": 3, "staged": 3, "without_crop": 0}
    sid = g.get_face(ids[1]).subject_id
    g.delete_subject(sid)
    with sqlite3.connect(tmp_path / "data" / "gallery.sqlite3") as conn:
        assert conn.execute("SELECT count(*) FROM face_embeddings").fetchone()[0] == 0
        assert conn.execute("SELECT count(*) FROM face_crops").fetchone()[0] == 0
