"""Restoring a backup into an empty or new data dir. Every file the manifest lists is checked against its size
and sha256 before anything is written (a damaged or incomplete backup is refused whole); the copies are checked
again as they are written, every database with ``PRAGMA integrity_check`` and its row counts, and the data dir
appears only when all of it is there (:class:`Staging`; ``gallery.sqlite3`` is put in place last). The index
snapshots are not in a backup: the server rebuilds them from ``gallery.sqlite3`` when it starts."""

from __future__ import annotations

from pathlib import Path

from service.backup.errors import BackupFailed, BackupRefused
from service.backup.files import Staging, check_database, copy_private, require_empty
from service.backup.manifest import Manifest, sha256_file
from service.gallery.sqlite.schema import DB_NAME


def verify(src: Path, manifest: Manifest) -> None:
    """:class:`BackupRefused` unless every file of ``manifest`` is in ``src`` with its size and sha256."""
    root = src.resolve()
    for f in manifest.files:
        path = src / f.path
        if path.is_symlink() or not path.is_file():
            raise BackupRefused(f"the backup {src} is incomplete: {f.path} is missing")
        if not path.resolve().is_relative_to(root):  # a folder of the backup that links elsewhere
            raise BackupRefused(f"the backup {src} is damaged: {f.path} leads outside it")
        try:
            size, digest = sha256_file(path)
        except OSError as exc:
            raise BackupRefused(f"the backup {src} cannot be read: {f.path}: {exc.strerror or exc}") from None
        if size != f.size:
            raise BackupRefused(f"the backup {src} is damaged: {f.path} is {size} bytes, its manifest says {f.size}")
        if digest != f.sha256:
            raise BackupRefused(f"the backup {src} is damaged: {f.path} does not match its sha256 in the manifest")


def restore(src: Path, data: Path) -> Manifest:
    """Restore the backup in ``src`` into the data dir ``data`` (absent or an empty folder); its manifest.
    :class:`BackupRefused` (nothing written) for a source that is not a sound backup or a ``data`` that is not
    empty; :class:`BackupFailed` (what was written removed) when a copy fails."""
    manifest = Manifest.read(src)
    require_empty(data, "refusing to restore into the data dir", hint="restore into an empty or new data dir")
    verify(src, manifest)
    stage = Staging(data, last=DB_NAME)
    try:
        for f in manifest.files:
            dst = stage.path / f.path
            if not dst.parent.exists():
                dst.parent.mkdir(mode=0o700, parents=True)
            try:
                size, digest = copy_private(src / f.path, dst)
            except OSError as exc:
                raise BackupFailed(f"{f.path} cannot be restored: {exc.strerror or exc}") from exc
            if (size, digest) != (f.size, f.sha256):
                raise BackupFailed(f"{f.path} changed while it was restored")
            if f.kind == "sqlite" and check_database(dst) != f.tables:
                raise BackupFailed(f"{f.path}: its row counts differ from the manifest's")
        stage.finish()
    except BaseException:
        stage.abort()
        raise
    return manifest
