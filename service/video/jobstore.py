"""Where video jobs live: :class:`JobStore` (the SQL, shared), :class:`SQLiteJobStore` (``<data>/videos.db``,
WAL, synchronous FULL) and the database's (:mod:`service.pgstores.media`).

Uploads are files in ``<data>/uploads`` of the process that received them, so a job belongs to that process's
data dir (its ``owner``): only the owner's runner picks it up or requeues it after a restart, while its status
and results are read, listed and deleted by any process sharing the store. The embedded store has one owner,
the data dir itself.
"""

from __future__ import annotations

import builtins
import contextlib
import functools
import json
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from service.config import DATA_DIR_MODE
from service.sqlconn import SqlConn
from service.sqlite_file import LockedSqlite

VIDEOS_FILE = "videos.db"
UPLOADS_DIR = "uploads"
STATUSES = ("queued", "running", "done", "failed")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    filename TEXT NOT NULL,
    path TEXT NOT NULL,
    fps REAL,
    bytes INTEGER NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    progress REAL NOT NULL DEFAULT 0,
    duration_s REAL,
    error TEXT,
    tracks TEXT
);
"""


class JobNotFound(LookupError):
    """No video job with this id."""


@dataclass
class Job:
    """A video job. ``progress`` in [0, 1]; ``tracks`` one dict per person seen (when done); times Unix s."""

    id: str
    status: str
    filename: str
    path: str
    fps: float | None
    bytes: int
    created_at: float
    updated_at: float
    progress: float = 0.0
    duration_s: float | None = None
    error: str | None = None
    tracks: list[dict[str, Any]] | None = field(default=None)


_FIELDS = tuple(f.name for f in fields(Job))
_COLS = ", ".join(_FIELDS)
"""The columns read back, one per :class:`Job` field (same names, same order)."""


class JobStore(ABC):
    """The jobs table; safe to share between threads. ``owner``: the data dir whose uploads this process reads
    (None: every job is this process's)."""

    table = "jobs"

    def __init__(self, data_dir: Path, owner: str | Callable[[], str] | None) -> None:
        self.uploads = data_dir / UPLOADS_DIR
        self._owner = owner

    @functools.cached_property
    def owner(self) -> str | None:
        """The owner, resolved on first use (a store that only reads, erases or lists never makes a replica id)."""
        return self._owner() if callable(self._owner) else self._owner

    @property
    def _mine(self) -> tuple[str, tuple[str, ...]]:
        """The SQL condition (and its argument) that keeps this owner's rows."""
        return ("", ()) if self.owner is None else (" AND owner = ?", (self.owner,))

    @abstractmethod
    def _conn(self) -> AbstractContextManager[SqlConn]:
        """A connection for one statement (committed when the block ends)."""

    def new_path(self) -> tuple[str, Path]:
        """A fresh job id and the path its upload is written to."""
        job_id = uuid.uuid4().hex
        self.uploads.mkdir(mode=DATA_DIR_MODE, parents=True, exist_ok=True)  # videos of people: private
        return job_id, self.uploads / f"{job_id}.video"

    def create(self, job_id: str, *, filename: str, path: Path, fps: float | None, size: int) -> Job:
        now = time.time()
        cols, marks = ("", "") if self.owner is None else (", owner", ", ?")
        with self._conn() as c:
            c.execute(
                f"INSERT INTO {self.table} (id, status, filename, path, fps, bytes, created_at, updated_at{cols}) "
                f"VALUES (?, 'queued', ?, ?, ?, ?, ?, ?{marks})",
                (job_id, filename, str(path), fps, size, now, now, *self._mine[1]),
            )
        return self.get(job_id)

    def _one(self, sql: str, job_id: str) -> Job:
        with self._conn() as c:
            row = c.execute(sql.format(table=self.table, cols=_COLS), (job_id,)).fetchone()
        if row is None:
            raise JobNotFound(job_id)
        return _job(row)

    def get(self, job_id: str) -> Job:
        return self._one("SELECT {cols} FROM {table} WHERE id = ?", job_id)

    def list(self, limit: int = 100, after: tuple[float, str] | None = None) -> list[Job]:
        """Up to ``limit`` jobs, newest first (by creation time, then id), starting after ``after``, the
        ``(created_at, id)`` of the last job of the previous page."""
        where, args = ("", ()) if after is None else (" WHERE (created_at, id) < (?, ?)", after)
        sql = f"SELECT {_COLS} FROM {self.table}{where} ORDER BY created_at DESC, id DESC LIMIT ?"
        with self._conn() as c:
            rows = c.execute(sql, (*args, limit)).fetchall()
        return [_job(r) for r in rows]

    def next_queued(self) -> Job | None:
        """The oldest queued job of this owner."""
        with self._conn() as c:
            row = c.execute(
                f"SELECT {_COLS} FROM {self.table} WHERE status = 'queued'{self._mine[0]} ORDER BY created_at LIMIT 1",
                self._mine[1],
            ).fetchone()
        return None if row is None else _job(row)

    def update(self, job_id: str, **values: Any) -> bool:
        """Set columns of a job; False when the job is gone (deleted, perhaps through another process)."""
        if "tracks" in values and values["tracks"] is not None:
            values["tracks"] = json.dumps(values["tracks"])
        values["updated_at"] = time.time()
        sets = ", ".join(f"{k} = ?" for k in values)
        with self._conn() as c:
            return bool(c.execute(f"UPDATE {self.table} SET {sets} WHERE id = ?", (*values.values(), job_id)).rowcount)

    def delete(self, job_id: str) -> Job:
        return self._one("DELETE FROM {table} WHERE id = ? RETURNING {cols}", job_id)

    def subject_tracks(self, subject_id: str) -> builtins.list[tuple[Job, builtins.list[dict[str, Any]]]]:
        """Every job whose results name ``subject_id``, oldest first, with those of its tracks that do (a subject's
        data export; the same search as :meth:`erase_subject`)."""
        with self._conn() as c:
            rows = c.execute(
                f"SELECT {_COLS} FROM {self.table} WHERE tracks LIKE ? ORDER BY created_at, id", (f'%"{subject_id}"%',)
            ).fetchall()
        jobs = [_job(r) for r in rows]
        found = [(j, [t for t in j.tracks or [] if t.get("subject_id") == subject_id]) for j in jobs]
        return [(j, tracks) for j, tracks in found if tracks]

    def erase_subject(self, subject_id: str) -> int:
        """Drop an erased subject's tracks from every job's ``tracks`` (their events are erased with them);
        returns how many jobs changed."""
        changed = self._rewrite_tracks(subject_id, lambda t: None)
        if changed:
            self._forget()
        return changed

    def rename_subject(self, subject_id: str, name: str) -> int:
        """Show ``name`` in every job's tracks of ``subject_id`` (the subject was renamed); how many jobs changed."""
        return self._rewrite_tracks(subject_id, lambda t: {**t, "name": name})

    def _rewrite_tracks(self, subject_id: str, change: Callable[[dict[str, Any]], dict[str, Any] | None]) -> int:
        """Replace each track of ``subject_id`` in every job's ``tracks`` by ``change(track)`` (None: drop it);
        returns how many jobs changed. One transaction; a job is rewritten only if its tracks are still those read
        (another replica may be changing another person in it), else read again."""
        find = f"SELECT id, tracks FROM {self.table} WHERE tracks LIKE ?"
        rewrite = f"UPDATE {self.table} SET tracks = ?, updated_at = ? WHERE id = ? AND tracks = ?"
        pattern, changed = f'%"{subject_id}"%', 0
        with self._batch() as c:
            rows = c.execute(find, (pattern,)).fetchall()
            while rows:
                job_id, text = rows.pop()
                tracks = json.loads(text)
                new = [t if t.get("subject_id") != subject_id else change(t) for t in tracks]
                kept = [t for t in new if t is not None]
                if kept == tracks:
                    continue
                if c.execute(rewrite, (json.dumps(kept), time.time(), job_id, text)).rowcount:
                    changed += 1
                else:
                    rows += c.execute(f"{find} AND id = ?", (pattern, job_id)).fetchall()
        return changed

    def _batch(self) -> AbstractContextManager[SqlConn]:
        """A connection whose statements commit together when the block ends (a database pool's connection
        already does: :meth:`_conn`)."""
        return self._conn()

    def _forget(self) -> None:
        """After an erasure committed: leave no copy of the erased rows in the store's files (SQLite: truncate
        the WAL). A database server's store has nothing to do here."""
        return None

    def recover(self) -> None:
        """After a restart: requeue this owner's interrupted jobs whose upload exists; fail the others visibly."""
        with self._conn() as c:
            rows = c.execute(
                f"SELECT {_COLS} FROM {self.table} WHERE status IN ('queued', 'running'){self._mine[0]}", self._mine[1]
            ).fetchall()
        for job in map(_job, rows):
            # the upload is where this data dir keeps it (new_path), not necessarily where the row says: a data dir
            # restored or moved elsewhere would read, and then delete, the upload of another data dir
            upload = self.uploads / f"{job.id}.video"
            if upload.is_file():
                self.update(job.id, status="queued", progress=0.0, path=str(upload))
            else:
                self.update(job.id, status="failed", error="the upload of this job is gone (interrupted by a restart)")

    def orphan_uploads(self, *, idle_s: float) -> tuple[Path, ...]:
        """Upload files in this process's data dir that no job row names, untouched for ``idle_s`` seconds: a
        job deleted through another replica while it was queued here, or an upload cut by a crash (its file is
        written before its row). A file still being written is younger than ``idle_s``."""
        now, stale = time.time(), []  # (a ``list`` annotation here would name this class's method)
        for path in self.uploads.glob("*.video"):
            with contextlib.suppress(FileNotFoundError):
                if now - path.stat().st_mtime > idle_s:
                    stale.append(path)
        if not stale:
            return ()
        marks = ", ".join("?" for _ in stale)
        with self._conn() as c:
            sql = f"SELECT id FROM {self.table} WHERE id IN ({marks})"
            known = {str(r[0]) for r in c.execute(sql, tuple(p.stem for p in stale)).fetchall()}
        return tuple(p for p in stale if p.stem not in known)

    def close(self) -> None:
        """Release the store's connection (a database store's pool belongs to the backend)."""
        return None


class SQLiteJobStore(JobStore):
    """:class:`JobStore` on ``<data>/videos.db`` (one connection, a lock)."""

    def __init__(self, data_dir: Path) -> None:
        super().__init__(data_dir, None)
        self._file = LockedSqlite(data_dir / VIDEOS_FILE, "synchronous=FULL", "secure_delete=ON", script=_SCHEMA)

    def _conn(self) -> AbstractContextManager[SqlConn]:
        return self._file.conn()

    def _batch(self) -> AbstractContextManager[SqlConn]:
        return self._file.write()

    def _forget(self) -> None:
        self._file.checkpoint()

    def close(self) -> None:
        self._file.close()


def _job(row: tuple[Any, ...]) -> Job:
    values = dict(zip(_FIELDS, row, strict=True))
    values["tracks"] = json.loads(values["tracks"]) if values["tracks"] else None
    return Job(**values)
