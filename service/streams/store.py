"""The configured live streams, in ``<data>/streams.db`` (SQLite, WAL, synchronous FULL), so they survive a
restart. The URL is stored in full (it is needed to reconnect); everything shown outside uses
:func:`service.video.decode.redact`."""

from __future__ import annotations

import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

STREAMS_FILE = "streams.db"


class StreamNotFound(LookupError):
    """No stream with this id."""


@dataclass(frozen=True, slots=True)
class StreamConfig:
    """A stream: ``fps`` is the most frames per second processed (more are dropped); ``created_at`` Unix s."""

    id: str
    name: str
    url: str
    fps: float
    created_at: float


class StreamStore:
    """The streams table; safe to share between threads."""

    def __init__(self, data_dir: Path) -> None:
        self._lock = threading.Lock()
        self._db = sqlite3.connect(data_dir / STREAMS_FILE, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS streams (id TEXT PRIMARY KEY, name TEXT NOT NULL, url TEXT NOT NULL, "
            "fps REAL NOT NULL, created_at REAL NOT NULL)"
        )

    def add(self, *, name: str, url: str, fps: float) -> StreamConfig:
        cfg = StreamConfig(uuid.uuid4().hex, name, url, fps, time.time())
        with self._lock:
            self._db.execute(
                "INSERT INTO streams (id, name, url, fps, created_at) VALUES (?, ?, ?, ?, ?)",
                (cfg.id, cfg.name, cfg.url, cfg.fps, cfg.created_at),
            )
        return cfg

    def all(self) -> list[StreamConfig]:
        with self._lock:
            rows = self._db.execute("SELECT id, name, url, fps, created_at FROM streams ORDER BY created_at").fetchall()
        return [StreamConfig(*r) for r in rows]

    def count(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM streams").fetchone()[0])

    def delete(self, stream_id: str) -> None:
        with self._lock:
            if self._db.execute("DELETE FROM streams WHERE id = ?", (stream_id,)).rowcount == 0:
                raise StreamNotFound(stream_id)

    def close(self) -> None:
        with self._lock:
            self._db.close()
