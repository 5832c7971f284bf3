"""Contract: search: top-k *subjects* (each once, ranked by its best face), batches of probes, distances and
similarities, model ids never mixed, erased faces never returned, counts."""

from __future__ import annotations

import numpy as np
import pytest

from service.gallery import Gallery, ModelMismatch
from tests.gallery.contract.helpers import MODEL, OTHER, faces, near, unit


def test_empty_gallery(gallery: Gallery, rng) -> None:
    assert gallery.search(unit(rng, 2), model_id=MODEL) == [[], []]
    assert gallery.search(unit(rng, 1)[0], model_id=MODEL, top_k=3) == [[]]  # a (128,) probe is one row
    assert gallery.face_count(MODEL) == 0 and gallery.subject_count() == 0
    stats = gallery.stats()
    assert (stats.subjects, stats.faces, stats.faces_by_model) == (0, 0, {})


def test_top_k_groups_faces_by_subject(gallery: Gallery, rng) -> None:
    centres = unit(rng, 12)
    ids = [s.id for s in gallery.create_subjects([(f"s{i}", None) for i in range(12)])]
    gallery.add_faces_many({sid: faces(near(rng, c, 3, 0.3)) for sid, c in zip(ids, centres, strict=True)})
    probe = unit(rng, 1)[0]
    crowd = gallery.create_subject(name="crowd")  # 40 faces nearer the probe than anyone else's
    gallery.add_faces(crowd.id, faces(near(rng, probe, 40, 0.05)))
    res = gallery.search(np.stack([probe, centres[3], centres[7]]), model_id=MODEL, top_k=5)
    assert [len(r) for r in res] == [5, 5, 5]
    first = res[0]
    assert first[0].subject_id == crowd.id and first[0].subject_name == "crowd"
    assert len({c.subject_id for c in first}) == 5  # the 40-face subject appears once
    assert [c.distance for c in first] == sorted(c.distance for c in first)
    assert res[1][0].subject_id == ids[3] and res[2][0].subject_id == ids[7]
    for row in res:
        for c in row:
            assert 0.0 <= c.distance <= 2.0001
            assert c.similarity == pytest.approx(1 - c.distance**2 / 2, abs=1e-5)
            assert gallery.get_face(c.face_id).subject_id == c.subject_id
    assert len(gallery.search(probe, model_id=MODEL, top_k=100)[0]) == 13  # every subject, once
    with pytest.raises(ValueError):
        gallery.search(probe, model_id=MODEL, top_k=0)


def test_a_subject_ranks_by_its_best_face(gallery: Gallery, rng) -> None:
    v = unit(rng, 4)
    a, b = gallery.create_subject(name="a"), gallery.create_subject(name="b")
    ra = gallery.add_faces(a.id, faces(v[:3]))
    gallery.add_faces(b.id, faces(near(rng, v[1], 1, 0.4)))
    hit = gallery.search(v[1], model_id=MODEL, top_k=2)[0]
    assert [c.subject_id for c in hit] == [a.id, b.id]
    assert hit[0].face_id == ra[1].id and hit[0].distance < 1e-3
    b_face = gallery.face_embeddings(b.id, model_id=MODEL)[0]
    assert hit[1].distance == pytest.approx(float(np.linalg.norm(b_face - v[1])), abs=1e-3)


def test_models_are_never_mixed(gallery: Gallery, rng) -> None:
    s = gallery.create_subject(name="A")
    other = unit(rng, 2)
    gallery.add_faces(s.id, faces(other, model=OTHER))
    with pytest.raises(ModelMismatch) as e:
        gallery.search(unit(rng, 1), model_id=MODEL)
    assert e.value.requested == MODEL and e.value.present == (OTHER,) and OTHER in str(e.value)
    mine = unit(rng, 1)
    rec = gallery.add_faces(s.id, faces(mine))[0]
    hit = gallery.search(other[0], model_id=MODEL, top_k=5)[0]  # probes meet only faces of their own model
    assert [c.face_id for c in hit] == [rec.id] and hit[0].distance > 0.1
    assert gallery.search(other[0], model_id=OTHER, top_k=1)[0][0].distance < 1e-3
    assert gallery.stats().faces_by_model == {OTHER: 2, MODEL: 1}
    assert (gallery.face_count(MODEL), gallery.face_count(OTHER), gallery.face_count("none")) == (1, 2, 0)


def test_erased_faces_and_subjects_are_never_returned(gallery: Gallery, rng) -> None:
    ids = [s.id for s in gallery.create_subjects([(f"s{i}", None) for i in range(30)])]
    vecs = unit(rng, 90)
    recs = gallery.add_faces_many({sid: faces(vecs[3 * i : 3 * i + 3]) for i, sid in enumerate(ids)})
    gone_subjects = ids[:5]
    gone_faces = [r.id for r in recs if r.subject_id in ids[5:10]]
    for sid in gone_subjects:
        assert gallery.delete_subject(sid) == 3
    for fid in gone_faces:
        gallery.delete_face(fid)
    res = gallery.search(vecs[:30], model_id=MODEL, top_k=10)
    seen_faces = {c.face_id for row in res for c in row}
    seen_subjects = {c.subject_id for row in res for c in row}
    assert not seen_subjects & set(gone_subjects + ids[5:10])
    assert not seen_faces & ({r.id for r in recs if r.subject_id in gone_subjects} | set(gone_faces))
    assert all(len(row) == 10 for row in res)  # the search looked past the erased faces
    assert gallery.face_count(MODEL) == 60 and gallery.subject_count() == 25
    # the last face of a model erased: an empty model again, not a mismatch
    for r in recs:
        if r.subject_id in ids[10:]:
            gallery.delete_face(r.id)
    assert gallery.search(vecs[0], model_id=MODEL) == [[]]
