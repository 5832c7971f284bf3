"""The one error of backup and restore: a refusal (bad input, a damaged backup) that changed nothing."""

from __future__ import annotations

from embeddings.errors import FaceRecError


class BackupRefused(FaceRecError):
    """The backup or restore was refused before anything was written (the destination is not empty, the source
    is not a backup or does not match its manifest, the backend is PostgreSQL); the CLI exits 2."""

    code = "backup_refused"


class BackupFailed(FaceRecError):
    """A backup or restore that started could not be finished (an I/O error, a database whose copy fails its
    integrity check); what it had written was removed. The CLI exits 1."""

    code = "backup_failed"
