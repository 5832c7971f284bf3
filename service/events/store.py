"""Track decisions as events, and the webhook outbox, behind one small :class:`EventStore` interface.

The embedded implementation is ``events.db`` (SQLite, WAL, ``synchronous=FULL``) in the data dir: an event
and its webhook outbox row are written in one transaction, so a crash after :meth:`EventStore.add` returns
loses neither (deliveries resume after a restart). Event ids are unique: adding an event whose id is already
stored is a no-op, which makes re-processing idempotent. Times are Unix seconds (UTC).
"""

from __future__ import annotations

import sqlite3
import threading
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

EVENTS_FILE = "events.db"

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


class EventStore(Protocol):
    """Where events and their pending webhook deliveries live (embedded SQLite now, PostgreSQL later)."""

    def add(self, events: list[Event], *, outbox: bool) -> list[Event]:
        """Store events (ids already stored are skipped) and, with ``outbox``, queue them for webhooks, in one
        transaction. Returns the events that were new."""
        ...

    def query(
        self,
        *,
        subject_id: str | None = None,
        source: str | None = None,
        since: float | None = None,
        until: float | None = None,
        limit: int = 100,
        cursor: int | None = None,
    ) -> tuple[list[Event], int | None]:
        """Events in insertion order after ``cursor``, filtered; ``(page, next cursor or None)``."""
        ...

    def erase_subject(self, subject_id: str) -> int:
        """Erase every event of a subject (and its pending deliveries); returns how many."""
        ...

    def purge(self, before: float) -> int:
        """Erase events older than ``before`` (Unix s); returns how many."""
        ...

    def due(self, now: float, limit: int) -> list[Pending]:
        """Pending deliveries whose next attempt is due at ``now``, oldest first."""
        ...

    def delivered(self, event_id: str) -> None: ...

    def retry_later(self, event_id: str, next_at: float, error: str) -> None: ...

    def next_due(self) -> float | None:
        """When the next pending delivery is due (Unix s), None when nothing is pending."""
        ...

    def close(self) -> None: ...


_COLUMNS = "id, time, source, track_id, subject_id, name, distance, estimated_fir, first_s, last_s, frames"


class SQLiteEventStore:
    """:class:`EventStore` on ``<data>/events.db``; safe to share between threads (one connection, a lock)."""

    def __init__(self, data_dir: Path) -> None:
        data_dir.mkdir(parents=True, exist_ok=True)
        self.path = data_dir / EVENTS_FILE
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.executescript(_SCHEMA)

    def add(self, events: list[Event], *, outbox: bool) -> list[Event]:
        new: list[Event] = []
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for e in events:
                    cur = self._db.execute(
                        f"INSERT OR IGNORE INTO events ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (
                            e.id,
                            e.time,
                            e.source,
                            e.track_id,
                            e.subject_id,
                            e.name,
                            e.distance,
                            e.estimated_fir,
                            e.first_s,
                            e.last_s,
                            e.frames,
                        ),
                    )
                    if cur.rowcount:
                        new.append(e)
                        if outbox:
                            self._db.execute("INSERT INTO outbox (event_id, next_at) VALUES (?, ?)", (e.id, e.time))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return new

    def query(
        self,
        *,
        subject_id: str | None = None,
        source: str | None = None,
        since: float | None = None,
        until: float | None = None,
        limit: int = 100,
        cursor: int | None = None,
    ) -> tuple[list[Event], int | None]:
        where: list[str] = ["seq > ?"]
        args: list[object] = [cursor or 0]
        for clause, value in (
            ("subject_id = ?", subject_id),
            ("source = ?", source),
            ("time >= ?", since),
            ("time < ?", until),
        ):
            if value is not None:
                where.append(clause)
                args.append(value)
        sql = f"SELECT seq, {_COLUMNS} FROM events WHERE {' AND '.join(where)} ORDER BY seq LIMIT ?"
        with self._lock:
            rows = self._db.execute(sql, (*args, limit + 1)).fetchall()
        items = [Event(*r[1:]) for r in rows[:limit]]
        return items, (int(rows[limit - 1][0]) if len(rows) > limit else None)

    def erase_subject(self, subject_id: str) -> int:
        with self._lock:
            return self._db.execute("DELETE FROM events WHERE subject_id = ?", (subject_id,)).rowcount

    def purge(self, before: float) -> int:
        with self._lock:
            return self._db.execute("DELETE FROM events WHERE time < ?", (before,)).rowcount

    def due(self, now: float, limit: int) -> list[Pending]:
        cols = ", ".join(f"e.{c.strip()}" for c in _COLUMNS.split(","))
        with self._lock:
            rows = self._db.execute(
                f"SELECT {cols}, o.attempts FROM outbox o JOIN events e ON e.id = o.event_id "
                "WHERE o.next_at <= ? ORDER BY o.next_at, e.seq LIMIT ?",
                (now, limit),
            ).fetchall()
        return [Pending(Event(*r[:-1]), int(r[-1])) for r in rows]

    def delivered(self, event_id: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM outbox WHERE event_id = ?", (event_id,))

    def retry_later(self, event_id: str, next_at: float, error: str) -> None:
        with self._lock:
            self._db.execute(
                "UPDATE outbox SET attempts = attempts + 1, next_at = ?, last_error = ? WHERE event_id = ?",
                (next_at, error[:500], event_id),
            )

    def next_due(self) -> float | None:
        with self._lock:
            row = self._db.execute("SELECT MIN(next_at) FROM outbox").fetchone()
        return None if row is None or row[0] is None else float(row[0])

    def pending_count(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()


def now() -> float:
    """The current time, Unix seconds."""
    return time.time()
