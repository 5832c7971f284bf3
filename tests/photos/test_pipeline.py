"""The batched indexing pipeline with the real model (MTCNN, FaceNet) on the 5-celebrity photos: the same faces,
embeddings, names and clusters as one-photo indexing, refused images reported in place, photos already
indexed skipped, and a storage failure acknowledging nothing it did not store."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from embeddings.errors import FaceRecError
from service.gallery import NewFace, open_gallery
from service.gallery.errors import StorageUnavailable
from service.photos.library import PhotoLibrary
from service.photos.pipeline import index_photos
from service.photos.sqlite import SQLitePhotoStore
from service.photos.types import NewObservation, Observation, Photo
from tests.conftest import image_files

pytestmark = pytest.mark.slow


def photos(root: Path, split: str = "train") -> list[tuple[bytes, str]]:
    return [
        (p.read_bytes(), f"{p.parent.name}/{p.name}") for d in sorted((root / split).iterdir()) for p in image_files(d)
    ]


def test_pipeline_matches_one_photo_indexing(tmp_path: Path, analyzer: Any, celebrity_root: Path) -> None:
    items = [*photos(celebrity_root)[::3], (b"not an image", "broken.jpg")]
    gallery = open_gallery(tmp_path / "gallery")
    enrolled = analyzer.analyze(items[0][0])[0]  # the first person is enrolled: identify names their faces
    subject = gallery.create_subject(name="first")
    gallery.add_faces(subject.id, [NewFace(embedding=enrolled.embedding, model_id=analyzer.model_id)])
    serial = PhotoLibrary(SQLitePhotoStore(tmp_path / "serial"))
    batched = PhotoLibrary(SQLitePhotoStore(tmp_path / "batched"))
    expected = []
    for image, name in items[:-1]:
        expected.append(serial.index_photo(analyzer=analyzer, gallery=gallery, image=image, external_id=name))
    got = list(index_photos(batched, analyzer=analyzer, gallery=gallery, items=items, workers=2, batch=4))
    assert [name for name, _ in got] == [name for _, name in items]
    refused = got[-1][1]
    assert isinstance(refused, FaceRecError) and refused.code == "invalid_image"
    for want, (_, have) in zip(expected, got[:-1], strict=True):
        assert not isinstance(have, Exception) and have.created
        assert have.photo.sha256 == want.photo.sha256
        assert [f.box for f in have.faces] == [f.box for f in want.faces]
        assert [f.subject_id for f in have.faces] == [f.subject_id for f in want.faces]
        a = batched.store.embeddings_of([f.id for f in have.faces])
        b = serial.store.embeddings_of([f.id for f in want.faces])
        assert np.allclose(a, b, atol=1e-3)  # one batched encoder call vs one per photo
    assert any(f.subject_id == subject.id for _, r in got[:-1] if not isinstance(r, Exception) for f in r.faces)

    def groups(lib: PhotoLibrary) -> set[frozenset[str]]:
        by: dict[int, set[str]] = {}
        ids, _ = lib.store.all_embeddings(analyzer.model_id, unnamed_only=True)
        for f in lib.store.get_faces(ids.tolist()):
            assert f.cluster_id is not None
            by.setdefault(f.cluster_id, set()).add(lib.store.get_photo(f.photo_id).external_id or "")
        return {frozenset(g) for g in by.values()}

    assert groups(batched) == groups(serial)  # the batch's vote sees its earlier photos like one-by-one does
    again = list(index_photos(batched, analyzer=analyzer, gallery=gallery, items=items[:3], batch=2))
    assert all(not isinstance(r, Exception) and not r.created for _, r in again)
    serial.close()
    batched.close()
    gallery.close()


def test_a_storage_failure_acknowledges_nothing_unstored(tmp_path: Path, analyzer: Any, celebrity_root: Path) -> None:
    items = photos(celebrity_root, "val")[:6]
    gallery = open_gallery(tmp_path / "gallery")
    lib = PhotoLibrary(SQLitePhotoStore(tmp_path / "photos"))
    real = lib.store.add_photos
    calls = 0

    def fail_second(
        photos: Sequence[tuple[str, str | None, Sequence[NewObservation]]],
    ) -> list[tuple[Photo, list[Observation], bool]]:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise StorageUnavailable("disk gone")
        return real(photos)

    lib.store.add_photos = fail_second  # type: ignore[method-assign]
    acked: list[str | None] = []
    with pytest.raises(StorageUnavailable):
        for name, _ in index_photos(lib, analyzer=analyzer, gallery=gallery, items=items, batch=3):
            acked.append(name)
    assert acked == [name for _, name in items[:3]]
    assert {p.external_id for p in map(lib.store.find_photo, lib.store.known_sha256s()) if p} == set(acked)
    lib.store.add_photos = real  # type: ignore[method-assign]
    lib.close()
    gallery.close()


def test_large_files_are_not_read_far_ahead(tmp_path: Path, analyzer: Any, celebrity_root: Path) -> None:
    """Photos are read ahead by bytes as well as by count: with 5 MB files and a 12 MB read-ahead, at most 3 files
    are held beyond those being prepared (64 were, whatever their size: 1.1 GB of 17 MB photos)."""
    jpeg = photos(celebrity_root)[0][0]
    size = 5 * 2**20
    pulled = started = most_ahead = 0

    class Counting:
        def __getattr__(self, name: str) -> Any:
            return getattr(analyzer, name)

        def load_image(self, image: bytes) -> Any:
            nonlocal started
            started += 1
            return analyzer.load_image(image)

    def items() -> Any:
        nonlocal pulled, most_ahead
        for i in range(12):  # a JPEG ignores what follows its end marker: each file is 5 MB, each sha256 its own
            pulled += 1
            most_ahead = max(most_ahead, pulled - started)
            yield jpeg + bytes(size - len(jpeg) - 4) + i.to_bytes(4, "big"), f"{i}.jpg"

    counting: Any = Counting()  # the real analyzer behind it
    lib = PhotoLibrary(SQLitePhotoStore(tmp_path / "lib"))
    gallery = open_gallery(tmp_path / "gallery")
    got = list(
        index_photos(
            lib, analyzer=counting, gallery=gallery, items=items(), workers=2, batch=8, readahead_bytes=12 * 2**20
        )
    )
    assert len(got) == 12 and all(not isinstance(r, Exception) and r.faces for _, r in got)
    assert most_ahead <= 3, f"{most_ahead} files were read ahead of the workers"
