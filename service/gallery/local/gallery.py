"""``LocalGallery``: the SQLite store (truth) + per-model FAISS indexes (cache) in one data dir.

Write path (the durability contract): validate -> SQLite transaction committed with ``synchronous=FULL``
(this is the acknowledgement) -> the in-memory index is updated -> return. A write that raises leaves nothing:
the index only ever holds committed faces. Opening (:mod:`.recovery`) loads each model's snapshot and replays
the later changes, or rebuilds from SQLite; the maintenance thread (:mod:`.maintenance`) converts large
indexes to HNSW and saves snapshots; searches are in :mod:`.search`.

Locks, always taken in this order: maintenance -> ``_write`` (one writer) -> ``cache.rw`` (shared for
searches, exclusive for index mutation).
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from service.gallery.crops import encode_crop
from service.gallery.cursor import decode_cursor, encode_cursor
from service.gallery.errors import ModelMismatch, SubjectNotFound
from service.gallery.local import search as searching
from service.gallery.local.maintenance import Maintenance
from service.gallery.local.recovery import ProgressFn, open_cache
from service.gallery.local.settings import GallerySettings
from service.gallery.lock import DataDirLock
from service.gallery.sqlite import SQLiteStore
from service.gallery.sqlite.faces import FaceRow
from service.gallery.types import Candidate, FaceRecord, GalleryStats, NewFace, Subject
from service.gallery.validation import check_limit, new_face_vectors, unit_vectors

log = logging.getLogger("facerec.gallery")


class LocalGallery:
    """The SQLite + FAISS gallery of one data dir (held with an exclusive lock while open). Implements
    :class:`service.gallery.base.Gallery`."""

    def __init__(self, data_dir: Path, settings: GallerySettings, progress: ProgressFn | None = None) -> None:
        self.data_dir = Path(data_dir)
        self.settings = settings
        self._lock = DataDirLock(self.data_dir)
        self._lock.acquire()
        self._write = threading.Lock()
        self._closed = False
        try:
            self.store = SQLiteStore(self.data_dir)
            self.cache, snapshots = open_cache(
                self.store,
                self.data_dir,
                settings.index,
                resave_after=settings.snapshot_every_changes,
                progress=progress,
            )
        except BaseException:
            with contextlib.suppress(Exception):
                self.store.close()
            self._lock.release()
            raise
        self._maintenance = Maintenance(
            self.store, self.cache, self.data_dir, settings, self._write, snapshots, progress
        )
        if settings.auto_maintain:
            self._maintenance.start()

    # ================================================================== subjects
    def create_subject(self, *, name: str, metadata: dict[str, Any] | None = None) -> Subject:
        return self.create_subjects([(name, metadata)])[0]

    def create_subjects(self, items: Sequence[tuple[str, dict[str, Any] | None]]) -> list[Subject]:
        """Create several subjects ``(name, metadata)`` in one transaction (bulk enrolment)."""
        with self._write:
            return self.store.insert_subjects([(name, dict(meta or {})) for name, meta in items])

    def get_subject(self, subject_id: str) -> Subject:
        return self.store.get_subject(subject_id)

    def list_subjects(self, *, limit: int = 50, cursor: str | None = None) -> tuple[list[Subject], str | None]:
        check_limit("limit", limit)
        subjects, last = self.store.list_subjects(limit, decode_cursor(cursor) if cursor else 0)
        return subjects, (encode_cursor(last) if last is not None else None)

    def update_subject(
        self, subject_id: str, *, name: str | None = None, metadata: dict[str, Any] | None = None
    ) -> Subject:
        with self._write:
            return self.store.update_subject(subject_id, name, metadata)

    def delete_subject(self, subject_id: str) -> int:
        with self._write:
            faces, applied = self.store.delete_subject(subject_id)
            self._erased(faces, applied)
        return len(faces)

    def subject_count(self) -> int:
        return self.store.count_subjects()

    # ================================================================== faces
    def add_faces(self, subject_id: str, faces: Sequence[NewFace]) -> list[FaceRecord]:
        return self.add_faces_many({subject_id: faces})

    def add_faces_many(self, batch: Mapping[str, Sequence[NewFace]]) -> list[FaceRecord]:
        """Enrol faces of several subjects in one transaction (bulk enrolment); all or nothing.

        Returns the records in the order given (subject by subject).
        """
        rows: list[FaceRow] = []
        vec_parts: list[npt.NDArray[np.float32]] = []
        for sid, faces in batch.items():
            if not faces:
                continue
            vecs = new_face_vectors(faces)
            vec_parts.append(vecs)
            for f, v in zip(faces, vecs, strict=True):
                rows.append((sid, f, v.astype("<f4").tobytes(), encode_crop(f.crop) if f.crop is not None else None))
        if not rows:
            return []
        with self._write:
            # A storage failure rolls back and raises StorageFull/Unavailable before the index is touched.
            records, pks, applied = self.store.insert_faces(list(batch), rows)  # <- the acknowledgement
            self.cache.add(
                np.fromiter((r.id for r in records), np.int64, len(records)),
                np.concatenate(vec_parts),
                np.array([r.model_id for r in records]),
                np.array([pks[r.subject_id] for r in records], np.int64),
                applied,
            )
        return records

    def list_faces(self, subject_id: str) -> list[FaceRecord]:
        return self.store.list_faces(subject_id)

    def get_face(self, face_id: int) -> FaceRecord:
        return self.store.get_face(face_id)

    def delete_face(self, face_id: int) -> None:
        with self._write:
            model_id, applied = self.store.delete_face(face_id)
            self._erased([(face_id, model_id)], applied)

    def _erased(self, faces: list[tuple[int, str]], applied: tuple[int, int]) -> None:
        """After the SQLite commit (caller holds ``_write``): drop from the index, truncate the WAL."""
        self.cache.erase(faces, applied)
        try:
            self.store.checkpoint()
        except Exception as e:  # a busy checkpoint is retried at the next snapshot
            log.warning("gallery: WAL checkpoint after erasure failed: %s", e)

    def find_face_by_sha256(self, sha256: str, *, subject_id: str | None = None) -> FaceRecord | None:
        return self.store.find_face_by_sha256(sha256, subject_id)

    def subject_writes(self, subject_id: str) -> AbstractContextManager[None]:
        return contextlib.nullcontext()  # the data dir has one process; enrolment serialises its own threads

    def face_embeddings(self, subject_id: str, *, model_id: str) -> npt.NDArray[np.float32]:
        vecs, models = self.store.face_embeddings(subject_id, model_id)
        if not len(vecs) and models:
            present = tuple(sorted(set(models)))
            raise ModelMismatch(
                f"subject {subject_id} has no faces of model {model_id!r}, only of {', '.join(present)}",
                requested=model_id,
                present=present,
            )
        return vecs

    def subjects_embeddings(self, subject_ids: Sequence[str], *, model_id: str) -> dict[str, npt.NDArray[np.float32]]:
        out: dict[str, npt.NDArray[np.float32]] = {}
        for sid in subject_ids:  # in-process reads: nothing to batch
            try:
                vecs, _ = self.store.face_embeddings(sid, model_id)
            except SubjectNotFound:  # erased meanwhile
                continue
            if len(vecs):
                out[sid] = vecs
        return out

    def crop_png(self, face_id: int) -> bytes | None:
        return self.store.crop_png(face_id)

    # ================================================================== search
    def search(self, probes: npt.NDArray[np.float32], *, model_id: str, top_k: int = 5) -> list[list[Candidate]]:
        check_limit("top_k", top_k)
        q = unit_vectors(probes, "probe")
        return searching.search(self.cache, self.store, q, model_id, top_k, self.settings.overfetch)

    def face_count(self, model_id: str) -> int:
        """Live faces of ``model_id``, from the in-memory index (``stats()`` counts in SQLite: ~40 ms at 1M)."""
        return self.cache.face_count(model_id)

    # ================================================================== re-indexing with another model
    def reindex_counts(self, model_id: str) -> dict[str, int]:
        return self.store.reindex_counts(model_id)

    def crops_to_embed(self, model_id: str, after_id: int, limit: int) -> list[tuple[int, bytes]]:
        return self.store.crops_to_embed(model_id, after_id, limit)

    def stage_embeddings(self, model_id: str, face_ids: Sequence[int], embeddings: npt.NDArray[np.float32]) -> int:
        """Store embeddings of ``model_id`` for existing faces, to be switched to by :meth:`switch_model`.
        Searches are not affected. Returns the rows written (an erased face is skipped)."""
        vecs = unit_vectors(embeddings, "embedding")
        with self._write:
            return self.store.stage_embeddings(model_id, face_ids, [v.astype("<f4").tobytes() for v in vecs])

    def switch_model(self, model_id: str) -> int:
        """Make ``model_id`` every face's model, atomically: in one transaction each face of another model gets
        its staged embedding (the old pair logged as a deletion, the staged rows dropped); then the old models'
        indexes drop those faces and the new model's index gains them. :class:`ReindexIncomplete` (nothing
        changed) if any such face has no staged embedding. Returns the number of faces switched."""
        with self._write:
            old, applied = self.store.switch_model(model_id)
            if not old:
                return 0
            self.cache.switch(old, self.store.embeddings_of([f for f, _ in old]), model_id, applied)
        log.info("gallery: switched %d faces to model %s", len(old), model_id)
        return len(old)

    # ================================================================== stats, snapshots, maintenance
    def stats(self) -> GalleryStats:
        by_model = self.store.faces_by_model()
        indexes, applied = self.cache.infos()
        return GalleryStats(
            subjects=self.store.count_subjects(),
            faces=sum(by_model.values()),
            faces_by_model=by_model,
            indexes=indexes,
            snapshots=dict(self._maintenance.snapshots),
            last_change=applied,
        )

    def save_snapshot(self) -> None:
        self._maintenance.save_snapshot()

    def check_available(self) -> None:
        """Nothing to reach: the data dir is this process's (its failures surface on the request that meets them)."""

    def maintain(self, *, force_snapshot: bool = False) -> None:
        """One maintenance pass: HNSW conversion/compaction, merging flat adds into HNSW, and a snapshot when
        due. Called by the background thread; call it directly when ``auto_maintain`` is False."""
        self._maintenance.run(force_snapshot=force_snapshot)

    def compact(self) -> None:
        """Rebuild every HNSW index now without its tombstones (maintenance does it at ``compact_ratio``)."""
        self._maintenance.compact()

    def set_ef_search(self, ef: int) -> None:
        """Change HNSW ``efSearch`` for every model (benchmarks)."""
        self.cache.set_ef_search(ef)

    def index_ids(self, model_id: str) -> npt.NDArray[np.int64]:
        """Face ids the index holds for ``model_id`` (tests and consistency checks)."""
        return self.cache.live_ids(model_id)

    def close(self) -> None:
        """Stop maintenance, save the snapshot if the index changed since the last one, release the lock."""
        if self._closed:
            return
        self._maintenance.stop()
        try:
            if self.cache.unsaved or self.cache.erased_at is not None:
                self.save_snapshot()
        except Exception as e:  # disk full / read-only: the next open replays or rebuilds from SQLite
            log.error("gallery: saving the index snapshot at close failed: %s", e)
        finally:
            self.store.close()
            self._lock.release()
            self._closed = True

    def __enter__(self) -> LocalGallery:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
