"""The files of ``FACEREC_CACHE`` a data dir needs, in a backup and back (:func:`layout.cache_files`).

A model is the data dir's when ``FACEREC_MODEL`` names it or one of its databases holds embeddings of it
(:data:`MODEL_TABLES`, read in the backup's consistent copies). A backup copies those models' files that exist
into its ``FACEREC_CACHE/`` folder; a fine-tuned model missing from the cache is listed as skipped (its faces
match nothing until it is put there). A restore checks the target cache before anything is written: a file
already there with the same sha256 is kept, a different one refuses the restore (never overwritten). Each file
written is copied into a ``.facerec-partial-*`` folder beside its place, checked, then linked into place (a
crash leaves no part-written file under the real name; the next restore removes what a dead one left)."""

from __future__ import annotations

import os
import shutil
import sqlite3
from collections.abc import Callable
from contextlib import closing, suppress
from dataclasses import dataclass, field
from pathlib import Path

from service.backup.errors import BackupFailed, BackupRefused
from service.backup.files import copy_private, fsync_dir, partial_path, private_dir, remove_interrupted
from service.backup.layout import CACHE_FOLDER, MODELS, PRETRAINED_ID, cache_files, valid_model_id
from service.backup.manifest import FileRecord, sha256_file
from service.gallery.sqlite.schema import DB_NAME as GALLERY_DB
from service.photos.sqlite import DB_NAME as PHOTOS_DB

MODEL_TABLES = ((GALLERY_DB, "faces"), (GALLERY_DB, "face_embeddings"), (PHOTOS_DB, "observations"))
"""``(database, table)`` whose ``model_id`` column names the models a data dir's embeddings belong to (the
gallery's faces, the embeddings a re-index has made for another model, the photo library's observations)."""


def used_models(data: Path, active: str) -> dict[str, list[str]]:
    """The models of the data dir ``data`` (a backup's copy of it): model id -> where it is used
    (``FACEREC_MODEL``, ``<database> <table>``), the active model ``active`` first."""
    used: dict[str, list[str]] = {active: ["FACEREC_MODEL"]}
    for db, table in MODEL_TABLES:
        for model_id in _model_ids(data / db, table):
            used.setdefault(model_id, []).append(f"{db} {table}")
    return used


def _model_ids(db: Path, table: str) -> list[str]:
    """The distinct ``model_id`` values of ``table`` in the SQLite file ``db`` (none without either)."""
    if not db.is_file():
        return []
    with closing(sqlite3.connect(db.absolute().as_uri() + "?mode=ro", uri=True)) as conn:
        columns = {str(r[1]) for r in conn.execute("SELECT * FROM pragma_table_info(?)", (table,))}
        if "model_id" not in columns:
            return []
        return sorted(str(r[0]) for r in conn.execute(f'SELECT DISTINCT model_id FROM "{table}"'))


def back_up(cache: Path, used: dict[str, list[str]], into: Path) -> tuple[list[FileRecord], dict[str, str]]:
    """Copy the cache files of the models ``used`` from ``cache`` into ``into``/``FACEREC_CACHE``; their
    records (paths in the cache, sorted) and the models left out (backup path -> why)."""
    records: list[FileRecord] = []
    skipped: dict[str, str] = {}
    for model_id, where in sorted(used.items()):
        folder = f"{CACHE_FOLDER}/{MODELS}/{model_id}/"
        if not valid_model_id(model_id):
            skipped[folder] = f"{', '.join(where)} names {model_id!r}, which is not a model id"
            continue
        if model_id != PRETRAINED_ID and not (cache / MODELS / model_id).is_dir():
            skipped[folder] = (
                f"the model {model_id} ({', '.join(where)}) is not in FACEREC_CACHE ({cache}): put it there "
                "on the restored machine, or its faces match nothing"
            )
            continue
        for rel in cache_files(model_id):
            src, dst = cache / rel, into / CACHE_FOLDER / rel
            if not src.is_file():  # a model without tables, or without a cohort
                continue
            dst.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            try:
                size, digest = copy_private(src, dst)
            except OSError as exc:
                raise BackupFailed(f"{src} cannot be copied: {exc.strerror or exc}") from exc
            records.append(FileRecord(rel, "file", size, digest))
    return sorted(records, key=lambda r: r.path), skipped


def missing(cache: Path, records: list[FileRecord]) -> list[FileRecord]:
    """The files of ``records`` that ``cache`` lacks (the ones a restore writes); :class:`BackupRefused` when
    one is there with other content (or is not a file): nothing is overwritten."""
    todo = []
    for f in records:
        target = cache / f.path
        if not target.exists() and not target.is_symlink():
            todo.append(f)
            continue
        try:
            same = target.is_file() and sha256_file(target) == (f.size, f.sha256)
        except OSError as exc:
            raise BackupRefused(f"FACEREC_CACHE {cache}: {f.path} cannot be read: {exc.strerror or exc}") from None
        if not same:
            raise BackupRefused(
                f"FACEREC_CACHE {cache} already holds {f.path}, which differs from the backup's: move it away, "
                "or restore with another FACEREC_CACHE (nothing was restored)"
            )
    return todo


@dataclass
class Written:
    """The files :func:`put` wrote into the cache and the folders it made for them (outermost first)."""

    files: list[Path] = field(default_factory=list)
    folders: list[Path] = field(default_factory=list)

    def undo(self) -> None:
        """Remove the files, then the folders left empty."""
        for path in self.files:
            path.unlink(missing_ok=True)
        for folder in reversed(self.folders):
            with suppress(OSError):  # not empty: another file was put there meanwhile
                folder.rmdir()


def put(
    src: Path, cache: Path, records: list[FileRecord], *, on_removed: Callable[[Path], None] = lambda _: None
) -> Written:
    """Write the files of ``records`` from the backup ``src`` into ``cache`` (none of them may be there:
    :func:`missing`), each checked against its sha256. What a killed restore left beside them is removed first
    (``on_removed`` is told). On any error what was written is removed again."""
    written = Written()
    try:
        for f in records:
            target = cache / f.path
            new = [p for p in [target.parent, *target.parent.parents] if not p.exists()]
            target.parent.mkdir(parents=True, exist_ok=True)
            written.folders.extend(reversed(new))
            for path in remove_interrupted(target):
                on_removed(path)
            _put_one(src / CACHE_FOLDER / f.path, target, f)
            written.files.append(target)
    except BaseException:
        written.undo()
        raise
    return written


def _put_one(src: Path, target: Path, record: FileRecord) -> None:
    """Copy ``src`` into a folder beside ``target``, check it, link it to ``target`` (which must not exist)."""
    stage = partial_path(target.parent, target)
    private_dir(stage)
    try:
        staged = stage / target.name
        try:
            size, digest = copy_private(src, staged)
            if (size, digest) != (record.size, record.sha256):
                raise BackupFailed(f"{CACHE_FOLDER}/{record.path} changed while it was restored")
            os.link(staged, target)  # never replaces a file: FileExistsError if one appeared meanwhile
        except OSError as exc:
            raise BackupFailed(f"{target} cannot be written: {exc.strerror or exc}") from exc
        fsync_dir(target.parent)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
