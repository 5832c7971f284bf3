"""Naming a cluster across two stores (the real embedded gallery and the real photo store): a failure in the
middle rolls back, a crash in the middle is completed by the repair after a restart, never enrolling twice."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from service.gallery import open_gallery
from service.gallery.errors import StorageUnavailable, SubjectNotFound
from service.photos import naming
from service.photos.library import PhotoLibrary
from service.photos.sqlite import SQLitePhotoStore
from tests.photos.test_library import GATE, GOOD, MODEL, obs, people


class Crash(BaseException):
    """The process dying at this point: no ``except Exception`` runs (no roll-back)."""


class Failing:
    """A real object with one method replaced by ``fail`` (raising), for one call only."""

    def __init__(self, real: Any, method: str, fail: Callable[[], BaseException]) -> None:
        self._real, self._method, self._fail, self.calls = real, method, fail, 0

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._real, name)
        if name != self._method:
            return attr

        def wrapped(*args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            if self.calls == 1:
                raise self._fail()
            return attr(*args, **kwargs)

        return wrapped


def setup(tmp_path: Path) -> tuple[PhotoLibrary, Any, int, np.ndarray]:
    lib = PhotoLibrary(SQLitePhotoStore(tmp_path))
    gallery = open_gallery(tmp_path / "gallery")
    emb, _ = people(1, 4)
    blurry = {**GOOD, "sharpness": 2.0}
    for i, e in enumerate(emb):
        lib.add_faces(sha256=f"s{i}", external_id=None, faces=[obs(e, blurry if i == 0 else GOOD)])
    (cluster,), _ = lib.store.list_clusters(limit=5, sample=1)
    return lib, gallery, cluster.id, emb


def reopen(tmp_path: Path, lib: PhotoLibrary, gallery: Any) -> tuple[PhotoLibrary, Any]:
    lib.close()
    gallery.close()
    return PhotoLibrary(SQLitePhotoStore(tmp_path)), open_gallery(tmp_path / "gallery")


def assert_named_once(lib: PhotoLibrary, gallery: Any, cluster_id: int, emb: np.ndarray) -> None:
    """Everything done exactly once: one subject "Ada" with the 3 faces that pass the gate, the 4 faces named."""
    subjects, _ = gallery.list_subjects(limit=50)
    assert [s.name for s in subjects] == ["Ada"] and subjects[0].face_count == 3
    faces = lib.store.photos_of_subject(subjects[0].id, limit=10)
    assert sum(len(fs) for _, fs in faces) == 4
    assert sum(f.face_id is not None for _, fs in faces for f in fs) == 3
    assert lib.store.pending_namings() == [] and lib.store.list_clusters(limit=5, sample=1)[1] == 0
    assert gallery.search(emb[1:2], model_id=MODEL, top_k=1)[0][0].subject_name == "Ada"


def assert_untouched(lib: PhotoLibrary, gallery: Any, cluster_id: int) -> None:
    assert gallery.list_subjects(limit=50)[0] == []
    assert len(lib.store.cluster_faces(cluster_id)) == 4 and lib.store.pending_namings() == []


@pytest.mark.parametrize("where", ["create_subject", "add_faces"])
def test_a_gallery_failure_rolls_back(tmp_path: Path, where: str) -> None:
    lib, gallery, cid, emb = setup(tmp_path)
    broken = Failing(gallery, where, lambda: StorageUnavailable("the gallery went away"))
    with pytest.raises(StorageUnavailable):
        naming.name_cluster(lib, gallery=broken, cluster_id=cid, gate=GATE, name="Ada")
    assert_untouched(lib, gallery, cid)  # nothing changed: no subject, the cluster intact, no intent left
    naming.name_cluster(lib, gallery=gallery, cluster_id=cid, gate=GATE, name="Ada")
    assert_named_once(lib, gallery, cid, emb)
    lib.close()
    gallery.close()


def test_a_store_failure_after_enrolment_rolls_back_the_templates(tmp_path: Path) -> None:
    lib, gallery, cid, _ = setup(tmp_path)
    real = lib.store
    lib.store = Failing(real, "set_subject", lambda: StorageUnavailable("disk gone"))
    with pytest.raises(StorageUnavailable):
        naming.name_cluster(lib, gallery=gallery, cluster_id=cid, gate=GATE, name="Ada")
    lib.store = real
    assert_untouched(lib, gallery, cid)
    lib.close()
    gallery.close()


@pytest.mark.parametrize(
    ("target", "method", "runs"),
    [
        ("gallery", "create_subject", True),
        ("gallery", "add_faces", False),
        ("gallery", "add_faces", True),
        ("store", "set_subject", True),
        ("store", "end_naming", False),
    ],
)
def test_a_crash_in_the_middle_is_completed_after_a_restart(
    tmp_path: Path, target: str, method: str, runs: bool
) -> None:
    """The process dies just before or just after (``runs``: its write is durable) the step."""
    lib, gallery, cid, emb = setup(tmp_path)
    real = gallery if target == "gallery" else lib.store
    step = getattr(real, method)

    def then_crash(*args: Any, **kwargs: Any) -> Any:
        if runs:
            step(*args, **kwargs)
        raise Crash

    wrapped = Failing(real, "-", Crash)
    wrapped.__dict__[method] = then_crash  # found before __getattr__
    if target == "store":
        lib.store = wrapped
    with pytest.raises(Crash):
        naming.name_cluster(
            lib, gallery=wrapped if target == "gallery" else gallery, cluster_id=cid, gate=GATE, name="Ada"
        )
    lib.store = real if target == "store" else lib.store
    lib, gallery = reopen(tmp_path, lib, gallery)
    assert len(lib.store.pending_namings()) == 1
    naming.repair_once(lib, gallery=gallery)
    assert lib.namings_repaired
    assert_named_once(lib, gallery, cid, emb)
    lib.close()
    gallery.close()


def test_an_intent_whose_subject_was_erased_is_dropped(tmp_path: Path) -> None:
    lib, gallery, cid, _ = setup(tmp_path)
    subject = gallery.create_subject(name="Bob", metadata={})
    lib.store.begin_naming(cluster_id=cid, faces=[1, 2], enrol=[2], subject_id=subject.id, name=None)
    gallery.delete_subject(subject.id)
    assert naming.repair_namings(lib, gallery=gallery) == 1
    assert lib.store.pending_namings() == [] and len(lib.store.cluster_faces(cid)) == 4
    lib.close()
    gallery.close()


def test_a_photo_erased_on_another_replica_while_its_cluster_is_named_leaves_no_template(tmp_path: Path) -> None:
    """Another replica erases a photo of the cluster after the naming read its faces and before it named them
    (here: just as the templates are enrolled): no gallery template of the erased face stays behind."""
    lib, gallery, cluster_id, _ = setup(tmp_path)
    other = PhotoLibrary(lib.store)  # another replica: its own write lock, the same store
    erased = lib.store.find_photo("s3")
    assert erased is not None
    erased_id = erased.id

    class ErasedMeanwhile:
        def __getattr__(self, name: str) -> Any:
            return getattr(gallery, name)

        def add_faces(self, *args: Any, **kwargs: Any) -> Any:
            other.delete_photo(erased_id, gallery=gallery)
            return gallery.add_faces(*args, **kwargs)

    try:
        named = naming.name_cluster(lib, gallery=ErasedMeanwhile(), cluster_id=cluster_id, gate=GATE, name="Ada")
        templates = gallery.list_faces(named.subject.id)
        assert [t.image_sha256 for t in templates] and all(t.image_sha256 != "s3" for t in templates)
        assert named.faces == 3 and named.enrolled == 2 == gallery.get_subject(named.subject.id).face_count
    finally:
        lib.close()
        gallery.close()


def test_a_subject_erased_on_another_replica_while_a_cluster_is_named_as_it_keeps_no_face(tmp_path: Path) -> None:
    """Another replica erases the subject (gallery, then its photo faces unnamed) after the templates were
    enrolled and before the faces are named: no photo face stays named after the erased subject (404, the faces
    unnamed in one cluster), as when the erasure comes after the naming."""
    lib, gallery, cluster_id, _ = setup(tmp_path)
    other = PhotoLibrary(lib.store)  # another replica: its own write lock, the same store
    ada = gallery.create_subject(name="Ada")

    class ErasedMeanwhile:
        def __getattr__(self, name: str) -> Any:
            return getattr(gallery, name)

        def add_faces(self, *args: Any, **kwargs: Any) -> Any:
            records = gallery.add_faces(*args, **kwargs)
            gallery.delete_subject(ada.id)  # service.erasure.erase_subject, on the other replica
            assert other.forget_subject(ada.id) == 0  # no face is named after it yet
            return records

    try:
        with pytest.raises(SubjectNotFound):
            naming.name_cluster(lib, gallery=ErasedMeanwhile(), cluster_id=cluster_id, gate=GATE, subject_id=ada.id)
        assert lib.store.photos_of_subject(ada.id, limit=10) == []
        (cluster,), total = lib.store.list_clusters(limit=5, sample=1)
        assert total == 1 and cluster.size == 4 and lib.store.pending_namings() == []
    finally:
        lib.close()
        gallery.close()
