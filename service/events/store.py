"""Track decisions as events, and the webhook outbox, behind one small :class:`EventStore` interface.

The embedded implementation is ``events.db`` (SQLite, WAL, ``synchronous=FULL``) in the data dir: an event
and its webhook outbox row are written in one transaction, so a crash after :meth:`EventStore.add` returns
loses neither (deliveries resume after a restart). Event ids are unique: adding an event whose id is already
stored is a no-op, which makes re-processing idempotent. Times are Unix seconds (UTC).
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from service.sqlconn import SqlConn
from service.sqlite_file import LockedSqlite

EVENTS_FILE = "events.db"

CLAIM_S = 60.0
"""A store shared by replicas claims the deliveries :meth:`EventStore.due` returns: they are due again this many
seconds later unless the claimer records their outcome first (so a sender sizes its batches to finish within it)."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    time REAL NOT NULL,
    source TEXT NOT NULL,
    track_id INTEGER NOT NULL,
    subject_id TEXT,
    name TEXT,
    distance REAL,
    estimated_fir REAL,
    first_s REAL NOT NULL,
    last_s REAL NOT NULL,
    frames INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS events_time ON events (time);
CREATE INDEX IF NOT EXISTS events_subject ON events (subject_id, seq);
CREATE INDEX IF NOT EXISTS events_source ON events (source, seq);
CREATE TABLE IF NOT EXISTS outbox (
    event_id TEXT PRIMARY KEY REFERENCES events (id) ON DELETE CASCADE,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_at REAL NOT NULL,
    last_error TEXT
);
"""


@dataclass(frozen=True, slots=True)
class Event:
    """One track decision. ``source`` is ``stream:<id>`` or ``video:<id>``; ``subject_id``/``name`` None =
    unknown person; ``distance`` L2 in [0, 2]; ``first_s``/``last_s`` source seconds; ``time`` Unix s."""

    id: str
    time: float
    source: str
    track_id: int
    subject_id: str | None
    name: str | None
    distance: float | None
    estimated_fir: float | None
    first_s: float
    last_s: float
    frames: int

    def to_dict(self) -> dict[str, Any]:
        """The JSON shape used by the API, webhooks and CSV export: ``time`` as ISO 8601 UTC."""
        d = asdict(self)
        d["time"] = datetime.fromtimestamp(self.time, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        d["estimated_false_identification_rate"] = d.pop("estimated_fir")
        return d


@dataclass(frozen=True, slots=True)
class Pending:
    """An event waiting for webhook delivery, with the attempts made so far."""

    event: Event
    attempts: int


_COLUMNS = "id, time, source, track_id, subject_id, name, distance, estimated_fir, first_s, last_s, frames"
_INSERT = f"INSERT INTO events ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING"


class EventStore(ABC):
    """Where events and their pending webhook deliveries live: the SQL is shared, the connection is the
    implementation's (:class:`SQLiteEventStore`, :class:`service.pgstores.events.PostgresEventStore`)."""

    @abstractmethod
    def transaction(self) -> AbstractContextManager[SqlConn]:
        """One write transaction (committed at the end of the block, rolled back on an exception)."""

    @abstractmethod
    def reader(self) -> AbstractContextManager[SqlConn]:
        """A connection for reads."""

    def add(self, events: list[Event], *, outbox: bool) -> list[Event]:
        """Store events (ids already stored are skipped) and, with ``outbox``, queue them for webhooks, in one
        transaction. Returns the events that were new."""
        new: list[Event] = []
        with self.transaction() as c:
            for e in events:
                row = (e.id, e.time, e.source, e.track_id, e.subject_id, e.name, e.distance, e.estimated_fir)
                if c.execute(_INSERT, (*row, e.first_s, e.last_s, e.frames)).rowcount:
                    new.append(e)
                    if outbox:
                        c.execute("INSERT INTO outbox (event_id, next_at) VALUES (?, ?)", (e.id, e.time))
        return new

    def query(self, f: EventFilter | None = None) -> tuple[list[Event], int | None]:
        """Events in insertion order after ``f.cursor``, filtered; ``(page, next cursor or None)``."""
        f = f or EventFilter()
        where: list[str] = ["seq > ?"]
        args: list[object] = [f.cursor or 0]
        for clause, value in (
            ("subject_id = ?", f.subject_id),
            ("source = ?", f.source),
            ("time >= ?", f.since),
            ("time < ?", f.until),
        ):
            if value is not None:
                where.append(clause)
                args.append(value)
        sql = f"SELECT seq, {_COLUMNS} FROM events WHERE {' AND '.join(where)} ORDER BY seq LIMIT ?"
        with self.reader() as c:
            rows = c.execute(sql, (*args, f.limit + 1)).fetchall()
        items = [Event(*r[1:]) for r in rows[: f.limit]]
        return items, (int(rows[f.limit - 1][0]) if len(rows) > f.limit else None)

    def erase_subject(self, subject_id: str) -> int:
        """Erase every event of a subject (and its pending deliveries); returns how many."""
        with self.transaction() as c:
            n = int(c.execute("DELETE FROM events WHERE subject_id = ?", (subject_id,)).rowcount)
        if n:
            self._forget()
        return n

    def rename_subject(self, subject_id: str, name: str) -> int:
        """Show ``name`` in every event of a subject (it was renamed; a pending delivery sends it too); how many."""
        with self.transaction() as c:
            sql = "UPDATE events SET name = ? WHERE subject_id = ? AND name <> ?"
            return int(c.execute(sql, (name, subject_id, name)).rowcount)

    def purge(self, before: float) -> int:
        """Erase events older than ``before`` (Unix s); returns how many."""
        with self.transaction() as c:
            n = int(c.execute("DELETE FROM events WHERE time < ?", (before,)).rowcount)
        if n:
            self._forget()
        return n

    def _forget(self) -> None:
        """After an erasure committed: leave no copy of the erased rows in the store's files (SQLite: truncate
        the WAL). A database server's store has nothing to do here."""
        return None

    def due(self, now: float, limit: int) -> list[Pending]:
        """Pending deliveries whose next attempt is due at ``now``, oldest first."""
        with self.reader() as c:
            rows = c.execute(
                f"SELECT {_PREFIXED}, o.attempts FROM outbox o JOIN events e ON e.id = o.event_id "
                "WHERE o.next_at <= ? ORDER BY o.next_at, e.seq LIMIT ?",
                (now, limit),
            ).fetchall()
        return [Pending(Event(*r[:-1]), int(r[-1])) for r in rows]

    def delivered(self, event_id: str) -> None:
        with self.transaction() as c:
            c.execute("DELETE FROM outbox WHERE event_id = ?", (event_id,))

    def retry_later(self, event_id: str, next_at: float, error: str) -> None:
        with self.transaction() as c:
            c.execute(
                "UPDATE outbox SET attempts = attempts + 1, next_at = ?, last_error = ? WHERE event_id = ?",
                (next_at, error[:500], event_id),
            )

    def next_due(self) -> float | None:
        """When the next pending delivery is due (Unix s), None when nothing is pending."""
        with self.reader() as c:
            row = c.execute("SELECT MIN(next_at) FROM outbox").fetchone()
        return None if row is None or row[0] is None else float(row[0])

    def pending_count(self) -> int:
        with self.reader() as c:
            return int(c.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])

    def close(self) -> None:
        """Release the store's connection (a database store's pool belongs to the backend)."""
        return None


_PREFIXED = ", ".join(f"e.{c.strip()}" for c in _COLUMNS.split(","))


MOMENT = "ISO 8601 (a time without a zone is UTC) or Unix seconds"
"""How ``since`` and ``until`` are given, in the API and the CLI."""


def unix_seconds(moment: datetime | None) -> float | None:
    """Unix seconds of ``moment``; a time without a zone is UTC (not the server's local time)."""
    if moment is None:
        return None
    return (moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)).timestamp()


@dataclass(frozen=True, slots=True)
class EventFilter:
    """A page of :meth:`EventStore.query`: events of ``subject_id`` / ``source`` only, at ``since`` <= time <
    ``until`` (Unix s), at most ``limit`` after ``cursor`` (the previous page's next cursor)."""

    subject_id: str | None = None
    source: str | None = None
    since: float | None = None
    until: float | None = None
    limit: int = 100
    cursor: int | None = None


class SQLiteEventStore(EventStore):
    """:class:`EventStore` on ``<data>/events.db``; safe to share between threads (one connection, a lock)."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / EVENTS_FILE
        pragmas = ("synchronous=FULL", "secure_delete=ON", "foreign_keys=ON")
        self._file = LockedSqlite(self.path, *pragmas, script=_SCHEMA)

    def transaction(self) -> AbstractContextManager[SqlConn]:
        return self._file.write()

    def reader(self) -> AbstractContextManager[SqlConn]:
        return self._file.conn()

    def _forget(self) -> None:
        self._file.checkpoint()

    def close(self) -> None:
        self._file.close()


def now() -> float:
    """The current time, Unix seconds."""
    return time.time()
