"""The photo library over its real stores (SQLite; PostgreSQL, also as two replicas) and FAISS index, with
synthetic unit embeddings (no model): idempotent indexing, erasure from store and index, search, incremental
cluster joining, re-clustering with cannot-link constraints and merge groups, merging, naming into a gallery,
retention."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from embeddings import QualityThresholds
from service.gallery import open_gallery
from service.photos import clusters as ops
from service.photos.cluster import ClusterParams
from service.photos.errors import ClusterConflict, ClusterNotFound, ObservationNotFound, PhotoNotFound
from service.photos.library import PhotoLibrary
from service.photos.sqlite import SQLitePhotoStore
from service.photos.types import NewObservation
from tests.storefixtures import OpenStores

MODEL = "test-model"
BOX = {"x": 0.0, "y": 0.0, "width": 120.0, "height": 120.0}
GOOD = {"face_size": 120.0, "confidence": 0.999, "sharpness": 150.0}
GATE = QualityThresholds(min_face_size=40.0, min_confidence=0.95, min_sharpness=20.0)


def people(n_people: int, per: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``per`` faces of each of ``n_people``: unit vectors at L2 ~0.5 from their person's centre."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_people, 128))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    who = np.repeat(np.arange(n_people), per)
    x = centres[who] + rng.standard_normal((len(who), 128)) * 0.03
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32), who


def obs(e: np.ndarray, quality: dict[str, Any] | None = None) -> NewObservation:
    return NewObservation(embedding=e, model_id=MODEL, box=BOX, quality=quality or GOOD)


@pytest.fixture
def lib(media_stores: OpenStores) -> Iterator[PhotoLibrary]:
    """A library on the embedded SQLite store and on the real PostgreSQL (``media_stores`` is parametrised)."""
    library = PhotoLibrary(media_stores("a").photos, cluster_params=ClusterParams(threshold=0.8))
    yield library
    library.close()


def index_all(lib: PhotoLibrary, emb: np.ndarray) -> list[int]:
    ids = []
    for i, e in enumerate(emb):
        ids.append(lib.add_faces(sha256=f"sha-{i}", external_id=f"p{i}.jpg", faces=[obs(e)]).faces[0].id)
    return ids


def groups(lib: PhotoLibrary, ids: list[int]) -> list[set[int]]:
    by: dict[int, set[int]] = {}
    for i, c in lib.store.cluster_of(ids).items():
        by.setdefault(c, set()).add(i)
    return sorted(by.values(), key=lambda g: min(g))


def test_same_sha256_is_idempotent_and_delete_erases(lib: PhotoLibrary) -> None:
    emb, _ = people(1, 2)
    first = lib.add_faces(sha256="abc", external_id="a.jpg", faces=[obs(emb[0]), obs(emb[1])])
    again = lib.add_faces(sha256="abc", external_id="other.jpg", faces=[obs(emb[0])])
    assert first.created and not again.created
    assert [f.id for f in again.faces] == [f.id for f in first.faces] and again.photo.external_id == "a.jpg"
    hits = lib.search(emb[0], model_id=MODEL, top_k=5, threshold=None)
    assert hits[0].face.id == first.faces[0].id and hits[0].distance < 1e-3 and len(hits) == 2
    lib.delete_photo(first.photo.id, gallery=None)
    assert lib.search(emb[0], model_id=MODEL, top_k=5, threshold=None) == []
    assert lib.store.get_faces([f.id for f in first.faces]) == []
    with pytest.raises(PhotoNotFound):
        lib.store.get_photo(first.photo.id)


def test_new_faces_join_clusters_incrementally(lib: PhotoLibrary) -> None:
    emb, who = people(3, 6)
    order = np.random.default_rng(1).permutation(len(emb))
    ids = index_all(lib, emb[order])
    truth = [{ids[k] for k in range(len(ids)) if who[order][k] == p} for p in range(3)]
    assert sorted(groups(lib, ids), key=lambda g: min(g)) == sorted(truth, key=lambda g: min(g))
    page, total = lib.store.list_clusters(limit=10, sample=3)
    assert total == 3 and [c.size for c in page] == [6, 6, 6] and all(len(c.sample_face_ids) == 3 for c in page)
    # a page after the previous one's last (size, id), of the clusters of min_size faces; one listed that
    # shrank meanwhile comes again, in its new place
    lib.store.split_face(page[0].id, page[0].sample_face_ids[0])
    rest, total = lib.store.list_clusters(limit=10, sample=1, after=(page[0].size, page[0].id), min_size=2)
    assert total == 3 and [(c.size, c.id) for c in rest] == [(6, page[1].id), (6, page[2].id), (5, page[0].id)]
    rest, total = lib.store.list_clusters(limit=10, sample=1, after=(6, page[2].id))
    assert total == 4 and [(c.size, c.id) for c in rest] == [(5, page[0].id), (1, rest[1].id)]


def test_recluster_keeps_ids_and_not_this_person_sticks(lib: PhotoLibrary) -> None:
    emb, _ = people(2, 5)
    ids = index_all(lib, emb)
    a = lib.store.cluster_of([ids[0]])[ids[0]]
    before = ops.recluster(lib, model_id=MODEL)
    assert before.clusters == 2 and lib.store.cluster_of([ids[0]])[ids[0]] == a  # ids stay stable
    new_cluster = ops.remove_face(lib, cluster_id=a, face_id=ids[0])  # the lowest id of its cluster
    assert lib.store.cluster_of([ids[0]])[ids[0]] == new_cluster != a
    ops.recluster(lib, model_id=MODEL)
    after = lib.store.cluster_of(ids)
    assert after[ids[0]] != after[ids[1]]
    assert len({after[i] for i in ids[1:5]}) == 1  # the rest stays together, under its old id
    assert after[ids[1]] == a
    with pytest.raises(ClusterConflict):
        ops.remove_face(lib, cluster_id=after[ids[1]], face_id=ids[6])
    # merging by hand overrides the constraint: the user says they are one person
    ops.merge_clusters(lib, into=after[ids[1]], other=after[ids[0]])
    ops.recluster(lib, model_id=MODEL)
    final = lib.store.cluster_of(ids)
    assert final[ids[1]] == final[ids[0]]
    with pytest.raises(ClusterNotFound):
        lib.store.cluster_faces(10_000)


def test_edits_made_while_every_reclustering_run_computes_are_not_undone(
    lib: PhotoLibrary, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A "not this person" (or a merge) during each of re-clustering's runs: the clusters it leaves keep every
    edit (the second run's write put a face taken out meanwhile back into its old cluster)."""
    emb, _ = people(1, 6)
    ids = index_all(lib, emb)
    a = lib.store.cluster_of([ids[0]])[ids[0]]
    real = ops.cluster
    calls: list[int] = []

    def edited_meanwhile(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) <= 3:
            ops.remove_face(lib, cluster_id=a, face_id=ids[len(calls) - 1])  # the user, in another request
        return real(*args, **kwargs)

    monkeypatch.setattr(ops, "cluster", edited_meanwhile)
    ops.recluster(lib, model_id=MODEL)
    now = lib.store.cluster_of(ids)
    assert lib.store.cannot_links() and all(now[x] != now[y] for x, y in lib.store.cannot_links())
    assert {now[i] for i in ids[3:]} == {a}  # the faces nobody took out are still together


def test_a_merge_survives_reclustering_until_a_face_is_taken_out(lib: PhotoLibrary) -> None:
    emb, _ = people(3, 4)  # three people far apart: re-clustering alone never joins them
    ids = index_all(lib, emb)
    a, b, c = (lib.store.cluster_of([ids[k]])[ids[k]] for k in (0, 4, 8))
    assert len({a, b, c}) == 3
    assert ops.merge_clusters(lib, into=a, other=b) == 8
    assert lib.store.merged_groups() == [ids[:8]]
    for _ in range(2):
        ops.recluster(lib, model_id=MODEL)
        after = lib.store.cluster_of(ids)
        assert {after[i] for i in ids[:8]} == {a} and {after[i] for i in ids[8:]} == {c}
    # "not this person" takes a face out of the merge for good; the rest stays merged
    out = ops.remove_face(lib, cluster_id=a, face_id=ids[5])
    ops.recluster(lib, model_id=MODEL)
    after = lib.store.cluster_of(ids)
    assert after[ids[5]] != a and {after[i] for i in ids[:8] if i != ids[5]} == {a}
    assert after[ids[5]] == out or after[ids[5]] == after[ids[4]]  # back with its own person's faces
    with pytest.raises(ObservationNotFound):  # a face that does not exist: 404, not "not in this cluster"
        ops.remove_face(lib, cluster_id=a, face_id=ids[-1] + 1000)
    # an erased face leaves its group; named faces leave theirs
    lib.delete_photo(lib.store.get_faces([ids[0]])[0].photo_id, gallery=None)
    assert ids[0] not in lib.store.merged_groups()[0]
    lib.store.set_subject(ids[1:4], "someone", {})
    assert lib.store.merged_groups() == [[i for i in ids[4:8] if i != ids[5]]]


def test_naming_a_cluster_enrols_only_faces_passing_the_gate(lib: PhotoLibrary, tmp_path: Path) -> None:
    gallery = open_gallery(tmp_path / "gallery")
    try:
        emb, _ = people(1, 4)
        blurry = {**GOOD, "sharpness": 2.0}
        for i, e in enumerate(emb):
            lib.add_faces(sha256=f"s{i}", external_id=None, faces=[obs(e, blurry if i == 0 else GOOD)])
        (cluster,), _ = lib.store.list_clusters(limit=5, sample=1)
        named = ops.name_cluster(lib, gallery=gallery, cluster_id=cluster.id, gate=GATE, name="Ada")
        assert named.faces == 4 and named.enrolled == 3 and named.subject.face_count == 3
        hits = gallery.search(emb[:1], model_id=MODEL, top_k=1)
        assert hits[0][0].subject_name == "Ada"
        assert lib.store.list_clusters(limit=5, sample=1) == ([], 0)
        photos = lib.store.photos_of_subject(named.subject.id, limit=10)
        assert len(photos) == 4 and all(f.subject_id == named.subject.id for _, fs in photos for f in fs)
        # erasing the photo faces of the person erases the templates enrolled from them
        erased = lib.erase_subject_faces(named.subject.id, gallery=gallery)
        assert len(erased) == 4 and gallery.get_subject(named.subject.id).face_count == 0
    finally:
        gallery.close()


def test_a_subject_erased_while_its_photo_is_indexed_does_not_keep_the_face(lib: PhotoLibrary, tmp_path: Path) -> None:
    """Identify named the face as a subject; the subject (on another replica) is erased before the face is
    written: the face must not stay named after a subject that no longer exists."""
    gallery = open_gallery(tmp_path / "gallery")
    try:
        emb, _ = people(2, 1)
        kept, erased = (gallery.create_subject(name=n) for n in ("Kept", "Gone"))
        named = [
            NewObservation(e, MODEL, BOX, GOOD, subject_id=s.id, distance=0.3)
            for e, s in zip(emb, (kept, erased), strict=True)
        ]
        gallery.delete_subject(erased.id)  # the erasure runs between identify and the write ...
        assert lib.forget_subject(erased.id) == 0  # ... and finds no face named after it yet
        (result,) = lib.add_identified([("sha-race", None, named)], gallery=gallery)
        assert [f.subject_id for f in result.faces] == [kept.id, None]  # the answer says so too
        stored = {f.id: f for f in lib.store.photo_faces(result.photo.id)}
        assert [f.subject_id for f in stored.values()] == [kept.id, None]
        assert lib.store.photos_of_subject(erased.id, limit=5) == []
        assert stored[result.faces[1].id].cluster_id is not None  # an unnamed face in a cluster of its own
    finally:
        gallery.close()


def test_a_subjects_photos_page_after_the_last_one_listed(lib: PhotoLibrary) -> None:
    """Pages of a subject's photos start after the ``(created_at, id)`` of the previous page's last photo, so
    one erased between two pages makes the next skip none (an offset skipped one)."""
    emb, _ = people(1, 5)
    ids = index_all(lib, emb)
    lib.store.set_subject(ids, "subject-p", {})
    first = lib.store.photos_of_subject("subject-p", limit=2)
    assert [fs[0].id for _, fs in first] == ids[:-3:-1]  # newest first
    lib.delete_photo(first[0][0].id, gallery=None)
    last = first[-1][0]
    rest = lib.store.photos_of_subject("subject-p", limit=5, after=(last.created_at, last.id))
    assert [fs[0].id for _, fs in rest] == ids[2::-1]


def test_forgotten_subject_faces_become_one_cluster(lib: PhotoLibrary) -> None:
    emb, _ = people(1, 3)
    ids = index_all(lib, emb)
    lib.store.set_subject(ids, "subject-x", {})
    assert lib.store.cluster_of(ids) == {}
    assert lib.forget_subject("subject-x") == 3
    assert len(set(lib.store.cluster_of(ids).values())) == 1


def test_retention_erases_old_unnamed_faces_only(tmp_path: Path) -> None:
    lib = PhotoLibrary(SQLitePhotoStore(tmp_path), retention_days=1.0)
    emb, _ = people(2, 1)
    old = lib.add_faces(sha256="old", external_id=None, faces=[obs(emb[0])]).faces[0]
    named = lib.add_faces(sha256="named", external_id=None, faces=[obs(emb[1])]).faces[0]
    lib.store.set_subject([named.id], "someone", {})
    assert lib.enforce_retention(now=old.created_at + 3600) == 0
    assert lib.enforce_retention(now=old.created_at + 2 * 86400) == 1
    assert lib.store.get_faces([old.id, named.id])[0].id == named.id
    assert lib.search(emb[0], model_id=MODEL, top_k=5, threshold=None)[0].face.id == named.id
    lib.close()


def test_state_survives_reopening(tmp_path: Path) -> None:
    lib = PhotoLibrary(SQLitePhotoStore(tmp_path))
    emb, _ = people(2, 3)
    ids = index_all(lib, emb)
    ops.remove_face(lib, cluster_id=lib.store.cluster_of([ids[0]])[ids[0]], face_id=ids[1])
    lib.close()
    again = PhotoLibrary(SQLitePhotoStore(tmp_path))
    assert again.store.cannot_links() == [(ids[0], ids[1]), (ids[1], ids[2])]
    assert again.search(emb[4], model_id=MODEL, top_k=1, threshold=None)[0].face.id == ids[4]
    assert again.store.known_sha256s() == {f"sha-{i}" for i in range(6)}
    again.close()


def test_background_task_reclusters_after_changes_and_stops(tmp_path: Path) -> None:
    from service.config import Settings
    from service.photos.service import Maintenance, close_library, open_library

    assert open_library(Settings(data=tmp_path)) is None  # off unless opted in
    lib = open_library(Settings(data=tmp_path, photo_library=True, photo_recluster_interval_s=0.05))
    assert lib is not None and lib.maintenance is not None
    emb, _ = people(1, 3)
    ids = index_all(lib, emb)
    cid = lib.store.cluster_of([ids[0]])[ids[0]]
    lib.store.replace_clusters({ids[2]: lib.store.new_cluster_ids(1)[0]})  # split by hand: the task re-joins it
    for _ in range(200):
        if len(set(lib.store.cluster_of(ids).values())) == 1:
            break
        threading.Event().wait(0.05)
    assert set(lib.store.cluster_of(ids).values()) == {cid}
    close_library(lib)
    assert not lib.maintenance._thread.is_alive()
    # run_once does nothing when nothing changed since the last run
    again = PhotoLibrary(SQLitePhotoStore(tmp_path))
    task = Maintenance(again, 0)
    task.run_once()
    task.run_once()
    version = again.store.change_count()
    task.run_once()
    assert again.store.change_count() == version and task._last == version
    task.stop()
    again.close()


def test_two_replicas_on_postgres_share_photos_clusters_and_erasure(pg_url: str, tmp_path: Path) -> None:
    from service.gallery.postgres.connection import PoolOptions
    from service.pgstores import open_postgres

    backends = [open_postgres(pg_url, pool=PoolOptions(min_size=1, max_size=2)) for _ in range(2)]
    a, b = (
        PhotoLibrary(be.media_stores(tmp_path / n).photos, cluster_params=ClusterParams(threshold=0.8))
        for be, n in zip(backends, "ab", strict=True)
    )
    try:
        emb, _ = people(2, 3)
        assert b.search(emb[0], model_id=MODEL, top_k=1, threshold=None) == []  # b's index exists before a writes
        ids = index_all(a, emb[:3])
        (first,) = b.search(emb[0], model_id=MODEL, top_k=1, threshold=None)  # b catches up from the database
        assert first.face.id == ids[0] and first.distance < 1e-3
        more = [
            b.add_faces(sha256=f"b-{i}", external_id=None, faces=[obs(e)]).faces[0].id for i, e in enumerate(emb[3:])
        ]
        assert b.add_faces(sha256="sha-1", external_id=None, faces=[obs(emb[1])]).created is False  # a indexed it
        assert len({c for c in a.store.cluster_of(ids + more).values()}) == 2
        assert a.search(emb[4], model_id=MODEL, top_k=1, threshold=None)[0].face.id == more[1]
        photo = a.store.get_faces([ids[0]])[0].photo_id
        a.delete_photo(photo, gallery=None)  # erased through a: b never returns it again
        hits = b.search(emb[0], model_id=MODEL, top_k=6, threshold=None)
        assert ids[0] not in {h.face.id for h in hits} and len(hits) == 5
        with a.store.maintenance_turn() as turn_a, b.store.maintenance_turn() as turn_b:
            assert turn_a and not turn_b  # background maintenance: one replica at a time
        with b.store.maintenance_turn() as turn_b:
            assert turn_b
    finally:
        a.close()
        b.close()
        for be in backends:
            be.close()
