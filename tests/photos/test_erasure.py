"""Erasing photo faces that were named with a cluster (real embedded gallery and photo store): when the gallery
fails mid-way, the erasure can be retried until no template enrolled from an erased face is left."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from service.gallery.errors import StorageUnavailable
from service.photos import naming
from service.photos.errors import PhotoNotFound
from service.photos.library import PhotoLibrary
from tests.photos.test_library import GATE
from tests.photos.test_naming import Failing, setup


def erase_photo(lib: PhotoLibrary, gallery: Any, subject_id: str) -> object:
    """``DELETE /v1/photos/{id}`` of the photo ``s1`` (a 404 once it is gone)."""
    photo = lib.store.find_photo("s1")
    if photo is None:
        raise PhotoNotFound("s1")
    return lib.delete_photo(photo.id, gallery=gallery)


ERASURES: dict[str, Callable[[PhotoLibrary, Any, str], object]] = {
    "photo": erase_photo,
    "subject's photo faces": lambda lib, gallery, subject: lib.erase_subject_faces(subject, gallery=gallery),
}


@pytest.mark.parametrize("what", sorted(ERASURES))
def test_an_erasure_the_gallery_fails_can_be_retried_to_the_end(tmp_path: Path, what: str) -> None:
    """The gallery fails while the templates are deleted (503): the retry finds the faces still there and
    deletes their templates (the store was erased first, so the retry was a 404 and the templates stayed)."""
    lib, gallery, cluster_id, _ = setup(tmp_path)
    try:
        named = naming.name_cluster(lib, gallery=gallery, cluster_id=cluster_id, gate=GATE, name="Ada")
        assert gallery.get_subject(named.subject.id).face_count == 3
        broken = Failing(gallery, "delete_face", lambda: StorageUnavailable("the gallery went away"))
        with pytest.raises(StorageUnavailable):
            ERASURES[what](lib, broken, named.subject.id)
        ERASURES[what](lib, gallery, named.subject.id)
        left = {t.image_sha256 for t in gallery.list_faces(named.subject.id)}
        assert "s1" not in left and (left == set() if what != "photo" else left == {"s2", "s3"})
    finally:
        lib.close()
        gallery.close()
