"""Contract: re-index staging and the model switch: counts, crops to embed in id order, staging (erased faces
skipped, searches unaffected), an incomplete switch refused with nothing changed, an atomic switch that survives
a restart, and staging from another process while the gallery serves."""

from __future__ import annotations

import numpy as np
import pytest

from service.gallery import Gallery, InvalidEmbedding, ModelMismatch, NewFace, ReindexIncomplete
from service.gallery.crops import decode_crop
from tests.gallery.contract.helpers import MODEL, OTHER, crop, unit

NEW = "ft-new-model-20261201000000"


def _enrol(gallery: Gallery, rng, n: int, *, with_crops: bool = True) -> tuple[list[int], np.ndarray, list]:
    sid = gallery.create_subject(name=f"p{gallery.subject_count()}").id
    vecs = unit(rng, n)
    crops = [crop(rng) for _ in range(n)]
    new = [NewFace(v, MODEL, crop=c if with_crops else None) for v, c in zip(vecs, crops, strict=True)]
    return [r.id for r in gallery.add_faces(sid, new)], vecs, crops


def test_counts_and_crops_to_embed(gallery: Gallery, rng) -> None:
    ids, _, crops = _enrol(gallery, rng, 7)
    bare, _, _ = _enrol(gallery, rng, 2, with_crops=False)
    assert gallery.reindex_counts(NEW) == {"faces": 9, "todo": 9, "staged": 0, "without_crop": 2}
    assert gallery.reindex_counts(MODEL) == {"faces": 9, "todo": 0, "staged": 0, "without_crop": 0}
    page = gallery.crops_to_embed(NEW, 0, 4)
    assert [fid for fid, _ in page] == ids[:4]
    assert np.array_equal(decode_crop(page[1][1]), crops[1])
    rest = gallery.crops_to_embed(NEW, page[-1][0], 100)
    assert [fid for fid, _ in rest] == ids[4:]  # faces without a crop are never offered
    assert gallery.crops_to_embed(MODEL, 0, 100) == []
    assert gallery.stage_embeddings(NEW, ids[:3], unit(rng, 3)) == 3
    assert [fid for fid, _ in gallery.crops_to_embed(NEW, 0, 100)] == ids[3:]  # staged ones are done
    assert gallery.reindex_counts(NEW) == {"faces": 9, "todo": 9, "staged": 3, "without_crop": 2}
    assert bare


def test_staging_validates_and_skips_erased_faces(gallery: Gallery, rng) -> None:
    ids, _, _ = _enrol(gallery, rng, 4)
    with pytest.raises(InvalidEmbedding):
        gallery.stage_embeddings(NEW, ids[:1], np.full((1, 128), 2.0, np.float32))
    gallery.delete_face(ids[0])
    assert gallery.stage_embeddings(NEW, ids, unit(rng, 4)) == 3  # the erased face gets no staged row
    assert gallery.reindex_counts(NEW) == {"faces": 3, "todo": 3, "staged": 3, "without_crop": 0}
    gallery.delete_subject(gallery.get_face(ids[1]).subject_id)  # staged rows go with their faces
    assert gallery.reindex_counts(NEW) == {"faces": 0, "todo": 0, "staged": 0, "without_crop": 0}


def test_switch_is_refused_until_complete_then_atomic(gallery: Gallery, rng, reopen) -> None:
    ids, old, _ = _enrol(gallery, rng, 10)
    new = unit(rng, 10)
    assert gallery.stage_embeddings(NEW, ids[:6], new[:6]) == 6
    with pytest.raises(ReindexIncomplete) as e:
        gallery.switch_model(NEW)
    assert e.value.missing == 4
    assert gallery.search(old[8], model_id=MODEL, top_k=1)[0][0].face_id == ids[8]  # the old model still serves
    with pytest.raises(ModelMismatch):
        gallery.search(new[0], model_id=NEW, top_k=1)  # staged embeddings are never searched
    assert gallery.stats().faces_by_model == {MODEL: 10}
    assert gallery.stage_embeddings(NEW, ids[6:], new[6:]) == 4
    assert gallery.switch_model(NEW) == 10
    assert gallery.stats().faces_by_model == {NEW: 10}
    assert {f.model_id for f in gallery.list_faces(gallery.get_face(ids[0]).subject_id)} == {NEW}
    for i in (0, 7, 9):
        assert gallery.search(new[i], model_id=NEW, top_k=1)[0][0].face_id == ids[i]
    with pytest.raises(ModelMismatch):
        gallery.search(old[0], model_id=MODEL, top_k=1)
    assert gallery.reindex_counts(NEW) == {"faces": 10, "todo": 0, "staged": 0, "without_crop": 0}
    assert gallery.switch_model(NEW) == 0  # nothing left to switch
    again = reopen()
    assert again.stats().faces_by_model == {NEW: 10} and again.face_count(NEW) == 10
    assert again.search(new[3], model_id=NEW, top_k=1)[0][0].face_id == ids[3]
    assert np.allclose(again.face_embeddings(again.get_face(ids[0]).subject_id, model_id=NEW), new, atol=1e-6)


def test_switch_of_a_mixed_gallery(gallery: Gallery, rng) -> None:
    ids, _, _ = _enrol(gallery, rng, 3)
    sid = gallery.create_subject(name="other").id
    other = [r.id for r in gallery.add_faces(sid, [NewFace(v, OTHER, crop=crop(rng)) for v in unit(rng, 2)])]
    assert gallery.reindex_counts(MODEL)["todo"] == 2
    new = unit(rng, 2)
    gallery.stage_embeddings(MODEL, other, new)
    assert gallery.switch_model(MODEL) == 2
    assert gallery.stats().faces_by_model == {MODEL: 5}
    assert gallery.search(new[1], model_id=MODEL, top_k=1)[0][0].face_id == other[1]
    assert ids


def test_staging_from_another_process_while_serving(gallery: Gallery, stager, rng) -> None:
    ids, old, _ = _enrol(gallery, rng, 5)
    assert stager.reindex_counts(NEW) == {"faces": 5, "todo": 5, "staged": 0, "without_crop": 0}
    todo = stager.crops_to_embed(NEW, 0, 100)
    assert [fid for fid, _ in todo] == ids
    new = unit(rng, 5)
    assert stager.stage_embeddings(NEW, ids[:4], new[:4]) == 4
    late = gallery.add_faces(gallery.get_face(ids[0]).subject_id, [NewFace(unit(rng, 1)[0], MODEL, crop=crop(rng))])
    assert gallery.search(old[2], model_id=MODEL, top_k=1)[0][0].face_id == ids[2]  # serving is unaffected
    assert gallery.reindex_counts(NEW) == {"faces": 6, "todo": 6, "staged": 4, "without_crop": 0}
    assert [fid for fid, _ in stager.crops_to_embed(NEW, 0, 100)] == [ids[4], late[0].id]
    assert stager.stage_embeddings(NEW, [ids[4], late[0].id], unit(rng, 2)) == 2
    assert gallery.switch_model(NEW) == 6
    assert gallery.search(new[1], model_id=NEW, top_k=1)[0][0].face_id == ids[1]
