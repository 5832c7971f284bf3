"""Gallery errors. Each has a stable ``code``; the service maps them to HTTP, nothing here knows HTTP."""

from __future__ import annotations

import logging

from embeddings.errors import FaceRecError


class GalleryError(FaceRecError):
    """Base class of every error the gallery raises on purpose."""

    code = "gallery_error"


class SubjectNotFound(GalleryError):
    """No subject has this id (never existed, or erased)."""

    code = "not_found"


class FaceNotFound(GalleryError):
    """No face has this id (never existed, or erased)."""

    code = "not_found"


class ModelMismatch(GalleryError):
    """The probe's model id has no faces while faces of other models exist; they are never mixed."""

    code = "model_mismatch"

    def __init__(self, message: str, *, requested: str, present: tuple[str, ...]) -> None:
        super().__init__(message)
        self.requested = requested
        self.present = present


class ReindexIncomplete(GalleryError):
    """Switching the gallery to another model was refused: some faces have no embedding of it yet (or no
    stored crop to compute one from). Nothing changed."""

    code = "reindex_incomplete"

    def __init__(self, message: str, *, missing: int) -> None:
        super().__init__(message)
        self.missing = missing


class ReindexRefused(GalleryError):
    """A re-index cannot be done: no gallery, another re-index running, or faces without a stored crop (they
    cannot be re-embedded). Nothing changed."""

    code = "reindex_refused"


class InvalidEmbedding(GalleryError):
    """An embedding is not a finite float (128,) unit vector."""

    code = "invalid_embedding"


class InvalidCursor(GalleryError, ValueError):
    """A pagination cursor that this gallery did not issue (also a ``ValueError``)."""

    code = "validation_error"


class GalleryLocked(GalleryError):
    """Another process holds the data dir's lock; opening it twice would corrupt the gallery."""

    code = "gallery_locked"


class SnapshotInvalid(GalleryError):
    """An index snapshot is missing, truncated, corrupt or from another gallery/schema (it gets rebuilt)."""

    code = "snapshot_invalid"


class StorageError(GalleryError):
    """A write could not be stored: the transaction was rolled back, nothing changed (reads keep working)."""

    code = "storage_error"


class StorageFull(StorageError):
    """The disk (or the database's size limit) is full: SQLite's ``SQLITE_FULL`` or ``ENOSPC``/``EDQUOT``."""

    code = "insufficient_storage"


class StorageUnavailable(StorageError):
    """The storage refuses writes: read-only database or file system, permission or I/O error."""

    code = "storage_unavailable"


class VectorIndexUnavailable(StorageUnavailable):
    """The vector engine (Milvus) cannot be reached or refused the call: searches cannot be answered and
    enrolments are not acknowledged (nothing searchable was added). Service resumes by itself when it is back."""

    code = "vector_index_unavailable"


def log_background_failure(log: logging.Logger, what: str, exc: BaseException) -> None:
    """Log a failed pass of a background thread that retries by itself: one warning line when its storage is away
    or full (a database restarting: expected, and every request says so with its 503), the traceback otherwise."""
    if isinstance(exc, StorageError):
        log.warning("%s failed (%s); retrying", what, exc)
    else:
        log.error("%s failed", what, exc_info=exc)
