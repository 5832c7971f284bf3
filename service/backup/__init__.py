"""``facerec backup`` / ``facerec restore`` of an embedded data dir: what a data dir holds (:mod:`.layout`), the
backup's ``manifest.json`` (:mod:`.manifest`), taking a backup while a server runs (:mod:`.create`) and restoring
one into an empty data dir (:mod:`.restore`). With ``FACEREC_DATABASE_URL`` everything lives in PostgreSQL:
pg_dump is its backup (docs/POSTGRES.md)."""

from __future__ import annotations

from service.backup.errors import BackupFailed, BackupRefused

__all__ = ["BackupFailed", "BackupRefused"]
