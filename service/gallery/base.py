"""The gallery interface the service uses: every caller above the gallery (routes, recognition, re-index, CLI,
bootstrap) is typed against :class:`Gallery` and never checks which backend it has. Backends: the embedded
SQLite + FAISS gallery (one process owns a data dir) and PostgreSQL (truth) with pgvector or Milvus for search
(any number of stateless replicas). One contract test suite runs against every backend.

Conventions: embeddings are float32 (128,) unit vectors; distances are L2 in [0, 2]; similarity is
``1 - d**2 / 2``. Every call is thread-safe. A write is durable (committed to disk) when it returns, and a
deleted face or subject is never returned by a search that starts after the delete returned.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from service.gallery.types import Candidate, FaceRecord, GalleryStats, NewFace, Subject


@runtime_checkable
class Gallery(Protocol):
    """A durable gallery of subjects and their face embeddings, searchable by nearest subject."""

    def create_subject(self, *, name: str, metadata: dict[str, Any] | None = None) -> Subject:
        """Create a subject with a new random id."""
        ...

    def get_subject(self, subject_id: str) -> Subject:
        """The subject, or :class:`SubjectNotFound`."""
        ...

    def list_subjects(self, *, limit: int = 50, cursor: str | None = None) -> tuple[list[Subject], str | None]:
        """A page of subjects in creation order and the cursor of the next page (None at the end)."""
        ...

    def update_subject(
        self, subject_id: str, *, name: str | None = None, metadata: dict[str, Any] | None = None
    ) -> Subject:
        """Rename and/or replace the metadata (None = unchanged)."""
        ...

    def delete_subject(self, subject_id: str) -> int:
        """Erase the subject and all its faces; returns the number of faces erased."""
        ...

    def create_subjects(self, items: Sequence[tuple[str, dict[str, Any] | None]]) -> list[Subject]:
        """Create several subjects ``(name, metadata)`` in one transaction (bulk enrolment, migration)."""
        ...

    def add_faces(self, subject_id: str, faces: Sequence[NewFace]) -> list[FaceRecord]:
        """Enrol faces in one transaction (all or nothing); durable when it returns."""
        ...

    def add_faces_many(self, batch: Mapping[str, Sequence[NewFace]]) -> list[FaceRecord]:
        """Enrol faces of several subjects in one transaction, all or nothing; records in the order given."""
        ...

    def list_faces(self, subject_id: str) -> list[FaceRecord]:
        """The subject's faces, oldest first."""
        ...

    def get_face(self, face_id: int) -> FaceRecord:
        """The face, or :class:`FaceNotFound`."""
        ...

    def delete_face(self, face_id: int) -> None:
        """Erase one face from the store and the index."""
        ...

    def find_face_by_sha256(self, sha256: str, *, subject_id: str | None = None) -> FaceRecord | None:
        """The oldest face enrolled from an image with this sha256 (optionally of one subject), or None."""
        ...

    def subject_writes(self, subject_id: str) -> AbstractContextManager[None]:
        """Hold off the enrolments into ``subject_id`` of every other process sharing this gallery until the block
        ends: enrolment's duplicate re-check and insert run inside it, so that the same image sent to two
        replicas at once is stored once. (The embedded gallery has one process: nothing to hold off.)"""
        ...

    def search(self, probes: npt.NDArray[np.float32], *, model_id: str, top_k: int = 5) -> list[list[Candidate]]:
        """For each probe row of (N, 128): up to ``top_k`` subjects ranked by their best face distance.

        Only faces of ``model_id`` are compared; :class:`ModelMismatch` if that model has no faces but
        others do. An empty gallery gives empty lists.
        """
        ...

    def face_embeddings(self, subject_id: str, *, model_id: str) -> npt.NDArray[np.float32]:
        """Its embeddings of ``model_id``, (n, 128); :class:`ModelMismatch` if it has only other models'."""
        ...

    def subjects_embeddings(self, subject_ids: Sequence[str], *, model_id: str) -> dict[str, npt.NDArray[np.float32]]:
        """Each subject's embeddings of ``model_id`` ((n, 128), enrolment order) in one read; subjects that do not
        exist (erased meanwhile) or have no face of that model are left out."""
        ...

    # ---------------------------------------------------------------- crops and re-indexing
    def crop_png(self, face_id: int) -> bytes | None:
        """The stored aligned 160x160 crop of a face (PNG bytes), or None if none was stored."""
        ...

    def reindex_counts(self, model_id: str) -> dict[str, int]:
        """For a re-index to ``model_id``: ``faces`` (all), ``todo`` (faces of another model), ``staged`` (of
        those, with a staged embedding of ``model_id``), ``without_crop`` (of those, neither crop nor staged)."""
        ...

    def crops_to_embed(self, model_id: str, after_id: int, limit: int) -> list[tuple[int, bytes]]:
        """Up to ``limit`` ``(face id, crop PNG)`` with ``id > after_id``, not of ``model_id`` and not yet staged
        for it, in id order."""
        ...

    def stage_embeddings(self, model_id: str, face_ids: Sequence[int], embeddings: npt.NDArray[np.float32]) -> int:
        """Store embeddings of ``model_id`` for existing faces (searches unaffected); an erased face is skipped.
        Safe to call from another process while servers run. Returns the rows written."""
        ...

    def switch_model(self, model_id: str) -> int:
        """Atomically make ``model_id`` every face's model from the staged embeddings; :class:`ReindexIncomplete`
        (nothing changed) if any face lacks one. Returns the number of faces switched."""
        ...

    def stats(self) -> GalleryStats:
        """Counts, faces per model id, index kind and the last change each snapshot holds."""
        ...

    def face_count(self, model_id: str) -> int:
        """Live faces of ``model_id``; cheap enough for every request (no table scan)."""
        ...

    def subject_count(self) -> int:
        """Number of subjects."""
        ...

    def save_snapshot(self) -> None:
        """Persist the index cache now (it is also saved periodically and at close)."""
        ...

    def check_available(self) -> None:
        """Raise :class:`StorageUnavailable` (or the vector engine's unavailable error) unless the storage the
        gallery depends on answers now (``/readyz``); waits at most the backend's connection timeout."""
        ...

    def close(self) -> None:
        """Save the snapshot and release the data dir."""
        ...
