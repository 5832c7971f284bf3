"""Restoring a backup into an empty or new data dir and the ``FACEREC_CACHE`` it needs. Every file the manifest
lists is checked against its size and sha256 before anything is written (a damaged or incomplete backup is
refused whole), and so is every cache file already in the target cache (one with other content refuses the
restore); the copies are checked again as they are written, every database with ``PRAGMA integrity_check`` and
its row counts; the cache files the target cache lacks are put in place (:mod:`.cache`), then the data dir
appears, whole (:class:`Staging`). The index snapshots are not in a backup: the server rebuilds them from
``gallery.sqlite3`` when it starts."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from service.backup.cache import missing, put
from service.backup.errors import BackupFailed, BackupRefused
from service.backup.files import Staging, check_database, copy_private, require_empty
from service.backup.layout import CACHE_FOLDER
from service.backup.manifest import FileRecord, Manifest, sha256_file
from service.gallery.sqlite.schema import DB_NAME


def verify(src: Path, manifest: Manifest) -> None:
    """:class:`BackupRefused` unless every file of ``manifest`` is in ``src`` with its size and sha256."""
    root = src.resolve()
    listed = [(f.path, f) for f in manifest.files] + [(f"{CACHE_FOLDER}/{f.path}", f) for f in manifest.cache]
    for rel, f in listed:
        path = src / rel
        if path.is_symlink() or not path.is_file():
            raise BackupRefused(f"the backup {src} is incomplete: {rel} is missing")
        if not path.resolve().is_relative_to(root):  # a folder of the backup that links elsewhere
            raise BackupRefused(f"the backup {src} is damaged: {rel} leads outside it")
        try:
            size, digest = sha256_file(path)
        except OSError as exc:
            raise BackupRefused(f"the backup {src} cannot be read: {rel}: {exc.strerror or exc}") from None
        if size != f.size:
            raise BackupRefused(f"the backup {src} is damaged: {rel} is {size} bytes, its manifest says {f.size}")
        if digest != f.sha256:
            raise BackupRefused(f"the backup {src} is damaged: {rel} does not match its sha256 in the manifest")


@dataclass
class Restored:
    """What a restore did: the backup's ``manifest``; the cache files (paths in the cache) it ``wrote`` and
    those it ``kept``, already there with the same content."""

    manifest: Manifest
    wrote: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)


def restore(src: Path, data: Path, cache: Path, *, on_removed: Callable[[Path], None] = lambda _: None) -> Restored:
    """Restore the backup in ``src`` into the data dir ``data`` (absent or an empty folder) and the cache dir
    ``cache`` (``FACEREC_CACHE``). :class:`BackupRefused` (nothing written) for a source that is not a sound
    backup, a ``data`` that is not empty or a cache file in the way; :class:`BackupFailed` (what was written
    removed) when a copy fails. ``on_removed`` is told of what a killed restore had left in the cache."""
    manifest = Manifest.read(src)
    require_empty(data, "refusing to restore into the data dir", hint="restore into an empty or new data dir")
    verify(src, manifest)
    todo = missing(cache, manifest.cache)
    stage = Staging(data, last=DB_NAME)
    try:
        for f in manifest.files:
            _restore_file(src, stage.path, f)
        written = put(src, cache, todo, on_removed=on_removed)
        try:
            stage.finish()
        except BaseException:
            written.undo()
            raise
    except BaseException:
        stage.abort()
        raise
    kept = sorted({f.path for f in manifest.cache} - {f.path for f in todo})
    return Restored(manifest, wrote=[f.path for f in todo], kept=kept)


def _restore_file(src: Path, into: Path, f: FileRecord) -> None:
    """Copy the data dir file ``f`` of the backup ``src`` into the staging folder ``into``, checked."""
    dst = into / f.path
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
