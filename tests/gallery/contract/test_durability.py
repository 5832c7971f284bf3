"""Contract: durability across close and reopen: every acknowledged write is there (subjects, faces, embeddings,
crops, erasures), a write that raised left nothing, ids are never reused, searches answer the same."""

from __future__ import annotations

import numpy as np
import pytest

from service.gallery import FaceNotFound, Gallery, InvalidEmbedding, NewFace, SubjectNotFound
from service.gallery.crops import decode_crop
from tests.gallery.contract.helpers import MODEL, OTHER, crop, faces, unit


def test_acknowledged_writes_survive_reopen(gallery: Gallery, reopen, rng) -> None:
    a = gallery.create_subject(name="a", metadata={"k": "v"})
    b, c = gallery.create_subjects([("b", None), ("c", {"x": 1})])
    va, vb = unit(rng, 4), unit(rng, 3)
    ca = crop(rng)
    ra = gallery.add_faces(a.id, [NewFace(va[0], MODEL, crop=ca, image_sha256="01" * 32), *faces(va[1:])])
    rb = gallery.add_faces_many({b.id: faces(vb), c.id: faces(unit(rng, 1), model=OTHER)})
    gallery.update_subject(b.id, name="b2")
    gallery.delete_face(ra[1].id)
    gallery.delete_subject(c.id)
    probes = np.concatenate([va, vb])
    before = gallery.search(probes, model_id=MODEL, top_k=3)
    page_before = gallery.list_subjects(limit=1)

    g = reopen()
    assert [s.id for s in g.list_subjects()[0]] == [a.id, b.id]
    assert g.get_subject(a.id).metadata == {"k": "v"} and g.get_subject(b.id).name == "b2"
    with pytest.raises(SubjectNotFound):
        g.get_subject(c.id)
    with pytest.raises(FaceNotFound):
        g.get_face(ra[1].id)
    assert [f.id for f in g.list_faces(a.id)] == [ra[0].id, ra[2].id, ra[3].id]
    assert g.get_face(ra[0].id) == ra[0]
    png = g.crop_png(ra[0].id)
    assert png is not None and np.array_equal(decode_crop(png), ca)
    found = g.find_face_by_sha256("01" * 32)
    assert found is not None and found.id == ra[0].id
    assert np.allclose(g.face_embeddings(b.id, model_id=MODEL), vb, atol=1e-6)
    assert g.stats().faces_by_model == {MODEL: 6} and g.face_count(MODEL) == 6 and g.subject_count() == 2
    after = g.search(probes, model_id=MODEL, top_k=3)
    assert [[(x.subject_id, x.face_id) for x in row] for row in after] == [
        [(x.subject_id, x.face_id) for x in row] for row in before
    ]
    assert g.list_subjects(limit=1, cursor=page_before[1])[0][0].id == b.id  # cursors outlive a restart
    assert g.add_faces(a.id, faces(unit(rng, 1)))[0].id > max(r.id for r in ra + rb)  # ids never reused


def test_a_write_that_raised_leaves_nothing(gallery: Gallery, reopen, rng) -> None:
    s = gallery.create_subject(name="a")
    kept = gallery.add_faces(s.id, faces(unit(rng, 2)))
    with pytest.raises(InvalidEmbedding):
        gallery.add_faces(s.id, [NewFace(unit(rng, 1)[0], MODEL), NewFace(np.full(128, 5.0, np.float32), MODEL)])
    with pytest.raises(SubjectNotFound):
        gallery.add_faces_many({s.id: faces(unit(rng, 3)), "nobody": faces(unit(rng, 1))})
    with pytest.raises(SubjectNotFound):
        gallery.update_subject("nobody", name="x")
    g = reopen()
    assert g.list_faces(s.id) == kept and g.stats().faces == 2 and g.subject_count() == 1
    assert g.face_count(MODEL) == 2


def test_reopen_of_an_empty_gallery_and_twice(gallery: Gallery, reopen, rng) -> None:
    g = reopen()
    assert g.stats().faces == 0 and g.list_subjects() == ([], None)
    s = g.create_subject(name="a")
    v = unit(rng, 1)
    g.add_faces(s.id, faces(v))
    g = reopen()
    g = reopen()
    assert g.search(v, model_id=MODEL, top_k=1)[0][0].subject_id == s.id
