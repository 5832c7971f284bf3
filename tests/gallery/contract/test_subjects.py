"""Contract: subjects: create (one and bulk), read, update, erase, count, cursor pagination."""

from __future__ import annotations

import base64

import pytest

from service.gallery import Gallery, InvalidCursor, SubjectNotFound
from tests.gallery.contract.helpers import faces, unit


def test_subject_crud(gallery: Gallery) -> None:
    s = gallery.create_subject(name="Ada", metadata={"team": "x", "n": [1, 2]})
    assert len(s.id) >= 16 and s.face_count == 0 and s.metadata == {"team": "x", "n": [1, 2]}
    got = gallery.get_subject(s.id)
    assert (got.id, got.name, got.metadata, got.face_count) == (s.id, "Ada", {"team": "x", "n": [1, 2]}, 0)
    u = gallery.update_subject(s.id, name="Ada L.", metadata={"team": "y"})
    assert (u.name, u.metadata) == ("Ada L.", {"team": "y"}) and u.updated_at >= s.updated_at
    assert gallery.update_subject(s.id, name="Ada").metadata == {"team": "y"}  # None = unchanged
    assert gallery.update_subject(s.id, metadata={}).name == "Ada"
    assert gallery.get_subject(s.id).metadata == {}
    assert gallery.create_subject(name="no metadata").metadata == {}
    assert gallery.delete_subject(s.id) == 0
    for call in (gallery.get_subject, gallery.delete_subject, lambda i: gallery.update_subject(i, name="x")):
        with pytest.raises(SubjectNotFound):
            call(s.id)
    with pytest.raises(SubjectNotFound):
        gallery.get_subject("never-existed")


def test_bulk_create_and_count(gallery: Gallery, rng) -> None:
    made = gallery.create_subjects([("a", None), ("b", {"k": 1}), ("c", {})])
    assert [s.name for s in made] == ["a", "b", "c"] and made[1].metadata == {"k": 1}
    assert len({s.id for s in made}) == 3 and gallery.subject_count() == 3
    assert [gallery.get_subject(s.id).name for s in made] == ["a", "b", "c"]
    gallery.add_faces(made[0].id, faces(unit(rng, 3)))
    assert gallery.delete_subject(made[0].id) == 3  # the faces erased with it are counted
    assert gallery.subject_count() == 2
    assert gallery.create_subjects([]) == []


def test_pagination_visits_every_subject_once_in_creation_order(gallery: Gallery) -> None:
    ids = [s.id for s in gallery.create_subjects([(f"p{i}", None) for i in range(23)])]
    ids.append(gallery.create_subject(name="last").id)
    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        page, cursor = gallery.list_subjects(limit=5, cursor=cursor)
        assert len(page) <= 5
        seen += [s.id for s in page]
        pages += 1
        if cursor is None:
            break
    assert seen == ids and pages == 5
    everything, end = gallery.list_subjects(limit=100)
    assert [s.id for s in everything] == ids and end is None
    exact, end = gallery.list_subjects(limit=24)
    assert len(exact) == 24 and end is None  # a full last page has no next cursor


def test_pagination_after_erasure_and_bad_input(gallery: Gallery) -> None:
    ids = [s.id for s in gallery.create_subjects([(f"p{i}", None) for i in range(6)])]
    page, cursor = gallery.list_subjects(limit=3)
    assert cursor is not None
    gallery.delete_subject(page[-1].id)  # the cursor's own subject erased: the next page still follows it
    gallery.delete_subject(ids[3])
    rest, end = gallery.list_subjects(limit=3, cursor=cursor)
    assert [s.id for s in rest] == ids[4:] and end is None
    # well-formed base64 of "s" + a key no database column holds, a sign, or non-ASCII digits
    forged = [base64.urlsafe_b64encode(f"s{k}".encode()).decode() for k in ("9" * 19, "-5", "+5", "\u00b2", " 5")]
    for bad in ("not-a-cursor!", "AAAA", "zz", *forged):
        with pytest.raises(InvalidCursor):
            gallery.list_subjects(cursor=bad)
    with pytest.raises(ValueError):
        gallery.list_subjects(cursor="not-a-cursor!")  # InvalidCursor is a ValueError (422 in the API)
    with pytest.raises(ValueError):
        gallery.list_subjects(limit=0)


def test_face_count_of_subject_counts_every_model(gallery: Gallery, rng) -> None:
    s = gallery.create_subject(name="A")
    gallery.add_faces(s.id, faces(unit(rng, 2)))
    gallery.add_faces(s.id, faces(unit(rng, 1), model="another-model"))
    assert gallery.get_subject(s.id).face_count == 3
    assert gallery.list_subjects()[0][0].face_count == 3


def test_sample_face_is_the_earliest_face_of_any_model(gallery: Gallery, rng) -> None:
    a, b, empty = gallery.create_subjects([("A", None), ("B", None), ("nobody", None)])
    first_b = gallery.add_faces(b.id, faces(unit(rng, 1), model="another-model"))[0].id
    first_a, second_a = (r.id for r in gallery.add_faces(a.id, faces(unit(rng, 2))))
    gallery.add_faces(b.id, faces(unit(rng, 2)))
    listed = {s.id: s.sample_face_id for s in gallery.list_subjects()[0]}
    assert listed == {a.id: first_a, b.id: first_b, empty.id: None}
    assert gallery.get_subject(a.id).sample_face_id == first_a
    assert gallery.create_subject(name="new").sample_face_id is None
    gallery.delete_face(first_a)  # the next earliest takes its place
    assert gallery.list_subjects()[0][0].sample_face_id == second_a
    assert gallery.update_subject(a.id, name="A.").sample_face_id == second_a
    gallery.delete_face(second_a)
    assert gallery.get_subject(a.id).sample_face_id is None
