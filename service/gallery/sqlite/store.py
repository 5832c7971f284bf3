"""``SQLiteStore``: the durable truth of the embedded gallery (subjects, faces with their embeddings and crops,
re-index staging, a deletions log), one method per operation.

A write method is one :meth:`~Connections.transaction` (all or nothing; durable when it returns; a full or
read-only disk raises :class:`StorageFull` / :class:`StorageUnavailable` with nothing written); a read uses the
calling thread's reader. The caller serialises writers (one lock). No connection is handed out.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from service.gallery.sqlite import changes, faces, staging, subjects
from service.gallery.sqlite.connections import Connections
from service.gallery.sqlite.faces import FaceRow
from service.gallery.sqlite.schema import meta_get, schema_version
from service.gallery.types import FaceRecord, Subject

Watermarks = tuple[int, int]
"""``(max face id ever assigned, max deletion seq ever assigned)``, as committed by a write."""


class SQLiteStore(Connections):
    """The gallery database of one data dir. Reads are thread-safe; writes must be serialised by the caller."""

    def __init__(self, data_dir: Path) -> None:
        super().__init__(data_dir)
        self.gallery_uuid = meta_get(self._writer, "gallery_uuid", "")

    def schema_version(self) -> int:
        return schema_version(self._reader())

    def meta_get(self, key: str, default: str) -> str:
        return meta_get(self._reader(), key, default)

    # ---------------------------------------------------------------- subjects
    def insert_subjects(self, items: Sequence[tuple[str, dict[str, Any]]]) -> list[Subject]:
        """Create subjects ``(name, metadata)`` in one transaction, each with a new uuid4-hex id."""
        with self.transaction() as conn:
            return subjects.insert(conn, items)

    def get_subject(self, subject_id: str) -> Subject:
        return subjects.get(self._reader(), subject_id)

    def list_subjects(self, limit: int, after_pk: int) -> tuple[list[Subject], int | None]:
        """Subjects in creation order with ``pk > after_pk``; returns them and the last pk if more follow."""
        return subjects.page(self._reader(), limit, after_pk)

    def update_subject(self, subject_id: str, name: str | None, metadata: dict[str, Any] | None) -> Subject:
        with self.transaction() as conn:
            return subjects.update(conn, subject_id, name, metadata)

    def delete_subject(self, subject_id: str) -> tuple[list[tuple[int, str]], Watermarks]:
        """Erase a subject and its faces in one transaction; returns their (face id, model) and the watermarks."""
        with self.transaction() as conn:
            return subjects.delete(conn, subject_id), changes.watermarks(conn)

    def subjects_by_pk(self, pks: Sequence[int]) -> dict[int, tuple[str, str]]:
        """pk -> (subject id, name) for the given pks (those that still exist)."""
        return subjects.by_pk(self._reader(), pks)

    def count_subjects(self) -> int:
        """The number of subjects, counted again only when something was committed since this thread's last
        count (SQLite's ``data_version``: a full count takes ~1 ms per 100,000 subjects, and identify asks
        on every request)."""
        conn = self._reader()
        version = int(conn.execute("PRAGMA data_version").fetchone()[0])
        known: tuple[int, int] | None = getattr(self._local, "subjects", None)
        if known is not None and known[0] == version:
            return known[1]
        n = subjects.count(conn)
        self._local.subjects = (version, n)
        return n

    # ---------------------------------------------------------------- faces
    def insert_faces(
        self, subject_ids: Sequence[str], rows: Sequence[FaceRow]
    ) -> tuple[list[FaceRecord], dict[str, int], Watermarks]:
        """Insert faces of ``subject_ids`` in one transaction (crops with their faces); returns the records in
        the order given, the subject pks by id and the watermarks committed with them."""
        with self.transaction() as conn:
            records, pks = faces.insert(conn, subject_ids, rows)
            return records, pks, changes.watermarks(conn)

    def delete_face(self, face_id: int) -> tuple[str, Watermarks]:
        """Erase one face (logging it); returns its model id and the watermarks."""
        with self.transaction() as conn:
            return faces.delete(conn, face_id), changes.watermarks(conn)

    def get_face(self, face_id: int) -> FaceRecord:
        return faces.get(self._reader(), face_id)

    def list_faces(self, subject_id: str) -> list[FaceRecord]:
        return faces.of_subject(self._reader(), subject_id)

    def find_face_by_sha256(self, sha256: str, subject_id: str | None) -> FaceRecord | None:
        return faces.by_sha256(self._reader(), sha256, subject_id)

    def face_embeddings(self, subject_id: str, model_id: str) -> tuple[npt.NDArray[np.float32], list[str]]:
        """The subject's embeddings of ``model_id`` (n, 128) and the models of all its faces."""
        return faces.subject_embeddings(self._reader(), subject_id, model_id)

    def embedding_blobs(self, face_ids: Sequence[int], model_id: str | None = None) -> dict[int, bytes]:
        """The current embeddings (``faces.embedding``) of those of these faces that exist (and are of
        ``model_id`` if given), by face id."""
        return faces.embedding_blobs(self._reader(), face_ids, model_id)

    def embeddings_of(self, face_ids: Sequence[int]) -> npt.NDArray[np.float32]:
        """The current embeddings (``faces.embedding``) of these faces, in the order given."""
        blobs = self.embedding_blobs(face_ids)
        return faces.vectors([blobs[int(f)] for f in face_ids])

    def faces_by_model(self) -> dict[str, int]:
        return faces.by_model(self._reader())

    def count_faces(self, model_id: str) -> int:
        return faces.count(self._reader(), model_id)

    def face_ids(self, model_id: str) -> npt.NDArray[np.int64]:
        """Ids of the faces of ``model_id`` in SQLite, ascending (tests and consistency checks)."""
        return faces.ids_of_model(self._reader(), model_id)

    def crop_png(self, face_id: int) -> bytes | None:
        """The stored aligned crop of a face (PNG bytes), or None if none was stored."""
        return faces.crop_png(self._reader(), face_id)

    # ---------------------------------------------------------------- what the index cache needs
    def iter_embeddings(
        self, model_id: str, after_id: int = 0, chunk: int = 50_000
    ) -> Iterator[tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]]:
        """Yield ``(face ids, embeddings)`` of ``model_id`` with ``id > after_id``, in id order, by chunks, all
        from one read transaction (one consistent state of the table)."""
        with self.snapshot_reader() as conn:
            yield from changes.iter_embeddings(conn, model_id, after_id, chunk)

    def deletions_after(self, model_id: str, seq: int) -> npt.NDArray[np.int64]:
        return changes.deletions_after(self._reader(), model_id, seq)

    def pruned_deletions(self) -> int:
        """Deletions up to this seq are no longer in the log (every snapshot saved since holds them)."""
        return int(self.meta_get(changes.PRUNED_KEY, "0"))

    def prune_deletions(self, upto_seq: int) -> None:
        """Forget deletions every snapshot already contains (the seq counter itself keeps increasing)."""
        with self.transaction() as conn:
            changes.prune_deletions(conn, upto_seq)

    def watermarks(self) -> Watermarks:
        return changes.watermarks(self._reader())

    def face_subject_pairs(self) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        """All ``(face id, subject pk)`` pairs, as two arrays."""
        return changes.face_subject_pairs(self._reader())

    # ---------------------------------------------------------------- re-indexing
    def reindex_counts(self, model_id: str) -> dict[str, int]:
        """See :func:`service.gallery.sqlite.staging.reindex_counts`."""
        return staging.reindex_counts(self._reader(), model_id)

    def crops_to_embed(self, model_id: str, after_id: int, limit: int) -> list[tuple[int, bytes]]:
        """See :func:`service.gallery.sqlite.staging.crops_to_embed`."""
        return staging.crops_to_embed(self._reader(), model_id, after_id, limit)

    def stage_embeddings(self, model_id: str, face_ids: Sequence[int], blobs: Sequence[bytes]) -> int:
        """Stage embedding blobs of ``model_id`` for existing faces in one transaction; returns the rows written."""
        with self.transaction() as conn:
            return staging.stage(conn, model_id, face_ids, blobs)

    def switch_model(self, model_id: str) -> tuple[list[tuple[int, str]], Watermarks]:
        """Switch every face to its staged embedding of ``model_id`` in one transaction (:class:`ReindexIncomplete`,
        nothing changed, if one lacks it); returns the (face id, old model) pairs and the watermarks."""
        with self.transaction() as conn:
            return staging.switch(conn, model_id), changes.watermarks(conn)
