"""Taking a backup of an embedded data dir, while a server may be running and writing to it.

Every SQLite database is copied with SQLite's online backup API (one read transaction each: a consistent copy of
that file, writers not blocked), checked with ``PRAGMA integrity_check`` and its tables counted; then the other
files (video uploads...) are copied; the audit log is copied last, up to its last whole record, so it records the
changes the copied databases hold, but for a request whose record was still being written (a record follows its
change's commit by a moment). Each database is consistent by itself; a change committed while the copy runs may
be in one file and not yet in another, as after a crash. A plain file the server removes meanwhile (the upload of
a video job that ended) is left out and listed as such. Then the files of ``FACEREC_CACHE`` the copied data dir
needs (:mod:`.cache`: its fine-tuned models, calibration tables). ``manifest.json`` is written last."""

from __future__ import annotations

import os
import sqlite3
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path

from service.backup.cache import back_up as back_up_cache
from service.backup.cache import used_models
from service.backup.errors import BackupFailed, BackupRefused
from service.backup.files import Staging, check_database, copy_private, require_empty, write_private
from service.backup.layout import CACHE_FOLDER, MANIFEST, Entry, scan
from service.backup.manifest import FileRecord, Manifest, sha256_file
from service.gallery.sqlite.schema import DB_NAME
from service.keys import KEYS_FILE

MAIN_TABLES = ((DB_NAME, "subjects", "subjects"), (DB_NAME, "faces", "faces"), (KEYS_FILE, "api_keys", "keys"))
"""``(file, table, name in counts)``: the row counts a manifest sums up (every table's are in its file's record)."""


def take_backup(data: Path, dest: Path, *, model: str, cache: Path) -> Manifest:
    """Back up the data dir ``data`` into the new or empty folder ``dest`` (see the module doc); ``model`` is the
    configured ``FACEREC_MODEL``, recorded, and ``cache`` is ``FACEREC_CACHE``. :class:`BackupRefused` (nothing
    written) for a ``dest`` that is not empty or a ``data`` without facerec's files; :class:`BackupFailed` (the
    partial copy removed) when a copy or its check fails."""
    require_empty(dest, "the backup destination")
    in_backup = f"FACEREC_CACHE: what the data dir needs of it is in {CACHE_FOLDER}/ of the backup"
    entries, skipped = scan(data, exclude={dest: "the backup being written", cache: in_backup})
    if not any(e.kind in ("sqlite", "audit") for e in entries):
        raise BackupRefused(f"{data} holds no facerec database or audit log: is it a data dir?")
    if any(e.path.split("/")[0] == CACHE_FOLDER for e in entries):
        raise BackupRefused(f"{data / CACHE_FOLDER} is in the way: a backup keeps FACEREC_CACHE's files there")
    created_at = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    stage = Staging(dest, last=MANIFEST)
    try:
        order = {"sqlite": 0, "file": 1, "audit": 2}
        records = []
        for entry in sorted(entries, key=lambda e: (order[e.kind], e.path)):
            record = _copy(entry, data, stage.path)
            if record is None:
                skipped[entry.path] = VANISHED
            else:
                records.append(record)
        records.sort(key=lambda r: r.path)
        cached, left_out = back_up_cache(cache, used_models(stage.path, model), stage.path)
        manifest = Manifest(
            created_at=created_at,
            source=str(data.absolute()),
            model=model,
            models=_models(stage.path / DB_NAME),
            counts=_counts(records),
            files=records,
            cache=cached,
            skipped=skipped | left_out,
        )
        write_private(stage.path / MANIFEST, manifest.to_json().encode())
        stage.finish()
    except BaseException:
        stage.abort()
        raise
    return manifest


VANISHED = "removed while the backup ran (e.g. a video upload whose job ended)"


def _copy(entry: Entry, data: Path, into: Path) -> FileRecord | None:
    """Copy one entry of ``data`` into the staging folder ``into``; its manifest record, or None for a plain file
    the server removed since the scan (a finished job's upload: the server deletes it when the job ends)."""
    src, dst = data / entry.path, into / entry.path
    if not dst.parent.exists():
        dst.parent.mkdir(mode=0o700, parents=True)
    try:
        if entry.kind == "sqlite":
            return _copy_database(src, dst, entry.path)
        if entry.kind == "audit":
            return _copy_audit(src, dst, entry.path)
        size, digest = copy_private(src, dst)
    except FileNotFoundError:
        if entry.kind != "file" or src.exists():
            raise BackupFailed(f"{src} cannot be copied: it disappeared") from None
        dst.unlink(missing_ok=True)
        return None
    except OSError as exc:
        raise BackupFailed(f"{src} cannot be copied: {exc.strerror or exc}") from exc
    return FileRecord(entry.path, "file", size, digest)


def _copy_database(src: Path, dst: Path, rel: str) -> FileRecord:
    """The online copy of one database (read-only on ``src``), checked and counted."""
    write_private(dst, b"")  # the copy is created 0600 (SQLite would create it by the umask)
    try:
        with (
            closing(sqlite3.connect(src.absolute().as_uri() + "?mode=ro", uri=True, timeout=30.0)) as source,
            closing(sqlite3.connect(dst)) as copy,
        ):
            source.backup(copy)  # all pages in one step: one read transaction, a consistent snapshot
    except sqlite3.Error as exc:
        raise BackupFailed(f"{src} cannot be copied: {exc}") from exc
    tables = check_database(dst)
    size, digest = sha256_file(dst)
    return FileRecord(rel, "sqlite", size, digest, tables=tables)


def _copy_audit(src: Path, dst: Path, rel: str) -> FileRecord:
    """The audit log up to its last whole record at this moment (a record being appended is left out)."""
    with open(src, "rb") as f:
        content = f.read(os.fstat(f.fileno()).st_size)
    content = content[: content.rfind(b"\n") + 1]
    size, digest = write_private(dst, content)
    return FileRecord(rel, "audit", size, digest, records=content.count(b"\n"))


def _counts(records: list[FileRecord]) -> dict[str, int]:
    """The manifest's summary: subjects, faces, keys (where their file exists) and audit records."""
    tables = {r.path: r.tables or {} for r in records}
    counts = {name: tables[file][table] for file, table, name in MAIN_TABLES if table in tables.get(file, {})}
    audit = [r.records for r in records if r.kind == "audit" and r.records is not None]
    if audit:
        counts["audit_records"] = audit[0]
    return counts


def _models(gallery: Path) -> dict[str, int]:
    """Faces per embedding model id in the copied gallery (empty without one)."""
    if not gallery.is_file():
        return {}
    with closing(sqlite3.connect(gallery)) as conn:
        rows = conn.execute("SELECT model_id, count(*) FROM faces GROUP BY model_id ORDER BY model_id").fetchall()
    return {str(m): int(n) for m, n in rows}
