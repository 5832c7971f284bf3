"""Contract: faces: enrol (one subject and several, all or nothing), read, erase, sha256 lookup, embeddings,
crops, and validation (a rejected write leaves nothing)."""

from __future__ import annotations

import numpy as np
import pytest

from service.gallery import FaceNotFound, Gallery, InvalidEmbedding, ModelMismatch, NewFace, SubjectNotFound
from service.gallery.crops import decode_crop
from tests.gallery.contract.helpers import MODEL, crop, faces, unit


def test_face_records_lookup_and_erasure(gallery: Gallery, rng) -> None:
    s = gallery.create_subject(name="A")
    v = unit(rng, 3)
    box = {"x": 1, "y": 2, "width": 30, "height": 40}
    recs = gallery.add_faces(
        s.id,
        [
            NewFace(v[0], MODEL, box=box, quality={"sharpness": 9.5}, image_sha256="ab" * 32),
            NewFace(v[1], MODEL, image_sha256="ab" * 32),
            NewFace(v[2], MODEL),
        ],
    )
    assert [r.subject_id for r in recs] == [s.id] * 3 and recs[0].id < recs[1].id < recs[2].id
    first = gallery.get_face(recs[0].id)
    assert (first.box, first.quality, first.image_sha256, first.model_id) == (box, {"sharpness": 9.5}, "ab" * 32, MODEL)
    assert first == recs[0]
    assert gallery.get_face(recs[2].id).box is None and gallery.get_face(recs[2].id).quality is None
    assert gallery.list_faces(s.id) == recs
    assert gallery.get_subject(s.id).face_count == 3
    # sha256: the oldest face with that image, optionally of one subject
    found = gallery.find_face_by_sha256("ab" * 32)
    assert found is not None and found.id == recs[0].id
    found = gallery.find_face_by_sha256("ab" * 32, subject_id=s.id)
    assert found is not None and found.id == recs[0].id
    other = gallery.create_subject(name="B")
    assert gallery.find_face_by_sha256("ab" * 32, subject_id=other.id) is None
    assert gallery.find_face_by_sha256("cd" * 32) is None
    emb = gallery.face_embeddings(s.id, model_id=MODEL)
    assert emb.shape == (3, 128) and emb.dtype == np.float32 and np.allclose(emb, v, atol=1e-6)
    # erasure
    gallery.delete_face(recs[0].id)
    with pytest.raises(FaceNotFound):
        gallery.get_face(recs[0].id)
    with pytest.raises(FaceNotFound):
        gallery.delete_face(recs[0].id)
    found = gallery.find_face_by_sha256("ab" * 32)
    assert found is not None and found.id == recs[1].id
    assert [f.id for f in gallery.list_faces(s.id)] == [recs[1].id, recs[2].id]
    assert gallery.get_subject(s.id).face_count == 2
    # ids are never reused
    assert gallery.add_faces(s.id, faces(unit(rng, 1)))[0].id > recs[2].id
    with pytest.raises(SubjectNotFound):
        gallery.list_faces("nobody")
    with pytest.raises(SubjectNotFound):
        gallery.face_embeddings("nobody", model_id=MODEL)
    assert gallery.face_embeddings(other.id, model_id=MODEL).shape == (0, 128)


def test_erasing_a_subject_erases_its_faces(gallery: Gallery, rng) -> None:
    a, b = gallery.create_subject(name="a"), gallery.create_subject(name="b")
    ra = gallery.add_faces(a.id, faces(unit(rng, 3), image_sha256="ef" * 32))
    rb = gallery.add_faces(b.id, faces(unit(rng, 2)))
    assert gallery.delete_subject(a.id) == 3
    for r in ra:
        with pytest.raises(FaceNotFound):
            gallery.get_face(r.id)
    assert gallery.find_face_by_sha256("ef" * 32) is None
    assert [f.id for f in gallery.list_faces(b.id)] == [r.id for r in rb]
    assert gallery.stats().faces == 2 and gallery.face_count(MODEL) == 2


def test_bulk_enrolment_keeps_the_order_given(gallery: Gallery, rng) -> None:
    a, b, c = (gallery.create_subject(name=n) for n in "abc")
    va, vb = unit(rng, 2), unit(rng, 3)
    recs = gallery.add_faces_many({b.id: faces(vb), c.id: [], a.id: faces(va)})
    assert [r.subject_id for r in recs] == [b.id] * 3 + [a.id] * 2
    assert np.allclose(gallery.face_embeddings(b.id, model_id=MODEL), vb, atol=1e-6)
    assert gallery.add_faces_many({}) == [] and gallery.add_faces(a.id, []) == []
    assert gallery.get_subject(c.id).face_count == 0


def test_crops_are_stored_with_their_faces(gallery: Gallery, rng) -> None:
    s = gallery.create_subject(name="A")
    crops = [crop(rng), crop(rng)]
    recs = gallery.add_faces(s.id, [NewFace(v, MODEL, crop=c) for v, c in zip(unit(rng, 2), crops, strict=True)])
    plain = gallery.add_faces(s.id, faces(unit(rng, 1)))[0]
    for r, c in zip(recs, crops, strict=True):
        png = gallery.crop_png(r.id)
        assert png is not None and np.array_equal(decode_crop(png), c)
    assert gallery.crop_png(plain.id) is None
    gallery.delete_face(recs[0].id)
    assert gallery.crop_png(recs[0].id) is None  # erased with its face
    gallery.delete_subject(s.id)
    assert gallery.crop_png(recs[1].id) is None


@pytest.mark.parametrize(
    "bad",
    [
        np.full(128, 3.0, np.float32),  # not unit
        np.zeros(128, np.float32),
        np.full(128, np.nan, np.float32),
        np.ones(64, np.float32) / 8.0,  # unit, wrong dimension
    ],
    ids=["norm-3", "zero", "nan", "dim-64"],
)
def test_invalid_embeddings_are_rejected_and_nothing_is_written(gallery: Gallery, rng, bad) -> None:
    s, t = gallery.create_subject(name="A"), gallery.create_subject(name="B")
    kept = gallery.add_faces(s.id, faces(unit(rng, 1)))
    with pytest.raises(InvalidEmbedding):
        gallery.add_faces(s.id, [NewFace(unit(rng, 1)[0], MODEL), NewFace(bad, MODEL)])
    with pytest.raises(InvalidEmbedding):
        gallery.add_faces_many({t.id: faces(unit(rng, 2)), s.id: [NewFace(bad, MODEL)]})
    with pytest.raises(InvalidEmbedding):
        gallery.search(bad[None, :] if bad.shape == (128,) else bad, model_id=MODEL)
    assert gallery.list_faces(s.id) == kept and gallery.list_faces(t.id) == []
    assert gallery.stats().faces == 1 and gallery.face_count(MODEL) == 1


def test_missing_model_id_or_subject_writes_nothing(gallery: Gallery, rng) -> None:
    s = gallery.create_subject(name="A")
    with pytest.raises(InvalidEmbedding):
        gallery.add_faces(s.id, [NewFace(unit(rng, 1)[0], "")])
    with pytest.raises(SubjectNotFound):
        gallery.add_faces("nobody", faces(unit(rng, 1)))
    with pytest.raises(SubjectNotFound):  # one unknown subject: the other's faces are not stored either
        gallery.add_faces_many({s.id: faces(unit(rng, 2)), "nobody": faces(unit(rng, 1))})
    assert gallery.list_faces(s.id) == [] and gallery.stats().faces == 0
    assert gallery.search(unit(rng, 1), model_id=MODEL) == [[]]


def test_face_embeddings_of_another_model(gallery: Gallery, rng) -> None:
    s = gallery.create_subject(name="A")
    gallery.add_faces(s.id, faces(unit(rng, 2), model="other-model"))
    with pytest.raises(ModelMismatch) as e:
        gallery.face_embeddings(s.id, model_id=MODEL)
    assert e.value.requested == MODEL and e.value.present == ("other-model",)
    gallery.add_faces(s.id, faces(unit(rng, 1)))
    assert gallery.face_embeddings(s.id, model_id=MODEL).shape == (1, 128)
    assert gallery.face_embeddings(s.id, model_id="other-model").shape == (2, 128)


def test_embeddings_of_several_subjects_in_one_read(gallery: Gallery, rng) -> None:
    a, b, empty = (gallery.create_subject(name=n) for n in ("A", "B", "no faces"))
    va, vb = unit(rng, 3), unit(rng, 1)
    gallery.add_faces(a.id, faces(va))
    gallery.add_faces(b.id, faces(vb))
    got = gallery.subjects_embeddings([b.id, a.id, empty.id, "nobody"], model_id=MODEL)
    assert set(got) == {a.id, b.id}  # no faces of the model, or no such subject: left out
    assert np.allclose(got[a.id], va, atol=1e-6) and np.allclose(got[b.id], vb, atol=1e-6)  # enrolment order
    assert got[a.id].dtype == np.float32
    assert gallery.subjects_embeddings([a.id], model_id="another-model") == {}
    gallery.delete_subject(b.id)
    assert set(gallery.subjects_embeddings([a.id, b.id], model_id=MODEL)) == {a.id}
