"""The configured live streams, so they survive a restart: :class:`StreamStore` (the SQL, shared),
:class:`SQLiteStreamStore` (``<data>/streams.db``, WAL, synchronous FULL) and the database's
(:mod:`service.pgstores.media`, with leases deciding which replica reads each stream). The URL is stored in full
(it is needed to reconnect); everything shown outside uses :func:`service.video.decode.redact`."""

from __future__ import annotations

import dataclasses
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from service.sqlconn import SqlConn
from service.sqlite_file import LockedSqlite
from service.streams.source import source_key

STREAMS_FILE = "streams.db"
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS streams (id TEXT PRIMARY KEY, name TEXT NOT NULL, url TEXT NOT NULL, "
    "fps REAL NOT NULL, created_at REAL NOT NULL)"
)

_COLUMNS = "id, name, url, fps, created_at"


class StreamNotFound(LookupError):
    """No stream with this id."""


class TooManyStreams(Exception):
    """The most streams allowed (``FACEREC_STREAMS_MAX``) are stored already."""


class DuplicateStream(Exception):
    """A stream reading the same source is stored already (:func:`~service.streams.source.source_key`);
    ``existing``: the oldest such stream."""

    def __init__(self, existing: StreamConfig) -> None:
        super().__init__(f"stream {existing.id} reads this source already")
        self.existing = existing


@dataclass(frozen=True, slots=True)
class StreamConfig:
    """A stream: ``fps`` is the most frames per second processed (more are dropped); ``created_at`` Unix s."""

    id: str
    name: str
    url: str
    fps: float
    created_at: float


class StreamStore(ABC):
    """The streams table; safe to share between threads. ``shared``: other processes read the same table (then
    :meth:`claim` decides which one reads each stream)."""

    shared = False

    @abstractmethod
    def _conn(self) -> AbstractContextManager[SqlConn]:
        """A connection for one statement (committed when the block ends)."""

    def _writer(self) -> AbstractContextManager[SqlConn]:
        """One write transaction, writers taking turns (across replicas for a shared store)."""
        return self._conn()

    def add(self, *, name: str, url: str, fps: float, limit: int | None = None) -> StreamConfig:
        """Store a new stream; :class:`DuplicateStream` when one reading the same source is stored already,
        :class:`TooManyStreams` when ``limit`` streams are. Both are checked and the row inserted in one turn of
        :meth:`_writer`, so two creations at once, on any replicas, cannot both pass."""
        cfg = StreamConfig(uuid.uuid4().hex, name, url, fps, time.time())
        key = source_key(url)
        with self._writer() as c:
            rows = c.execute(f"SELECT {_COLUMNS} FROM streams ORDER BY created_at, id").fetchall()
            same = [StreamConfig(*r) for r in rows if source_key(r[2]) == key]
            if same:
                raise DuplicateStream(same[0])
            if limit is not None and len(rows) >= limit:
                raise TooManyStreams(f"at most {limit} streams may run (FACEREC_STREAMS_MAX)")
            c.execute(
                "INSERT INTO streams (id, name, url, fps, created_at) VALUES (?, ?, ?, ?, ?)",
                (cfg.id, cfg.name, cfg.url, cfg.fps, cfg.created_at),
            )
        return cfg

    def update(
        self, stream_id: str, *, name: str | None = None, url: str | None = None, fps: float | None = None
    ) -> StreamConfig:
        """Change a stream's name, URL or fps in place (``None``: unchanged), keeping its id and creation time; the
        stream as stored now. :class:`StreamNotFound`; :class:`DuplicateStream` when another stream reads the new
        URL's source (the stream's own source under other credentials is not a duplicate). Checked and written in
        one turn of :meth:`_writer`, as :meth:`add`, so a change and a creation of one camera at once, on any
        replicas, cannot both pass."""
        with self._writer() as c:
            rows = c.execute(f"SELECT {_COLUMNS} FROM streams ORDER BY created_at, id").fetchall()
            configs = [StreamConfig(*r) for r in rows]
            current = next((cfg for cfg in configs if cfg.id == stream_id), None)
            if current is None:
                raise StreamNotFound(stream_id)
            if url is not None:
                key = source_key(url)
                same = [cfg for cfg in configs if cfg.id != stream_id and source_key(cfg.url) == key]
                if same:
                    raise DuplicateStream(same[0])
            changed = dataclasses.replace(
                current,
                name=current.name if name is None else name,
                url=current.url if url is None else url,
                fps=current.fps if fps is None else fps,
            )
            if changed != current:
                c.execute(
                    "UPDATE streams SET name = ?, url = ?, fps = ? WHERE id = ?",
                    (changed.name, changed.url, changed.fps, stream_id),
                )
        return changed

    def all(self) -> list[StreamConfig]:
        with self._conn() as c:
            rows = c.execute(f"SELECT {_COLUMNS} FROM streams ORDER BY created_at").fetchall()
        return [StreamConfig(*r) for r in rows]

    def count(self) -> int:
        with self._conn() as c:
            return int(c.execute("SELECT COUNT(*) FROM streams").fetchone()[0])

    def delete(self, stream_id: str) -> None:
        with self._conn() as c:
            if c.execute("DELETE FROM streams WHERE id = ?", (stream_id,)).rowcount == 0:
                raise StreamNotFound(stream_id)

    def claim(self, stream_ids: Sequence[str], health: dict[str, dict[str, Any]]) -> set[str]:
        """Of ``stream_ids``, those this process is to read (their lease taken or renewed), publishing the health
        of those it reads (``health``: stream id -> :meth:`StreamWorker.health`). Embedded: all of them."""
        return set(stream_ids)

    def release(self, stream_ids: Sequence[str]) -> None:
        """Give up reading these streams now (a clean shutdown of a shared store's process)."""
        return None

    def healths(self) -> dict[str, dict[str, Any]]:
        """The last health each stream's reader published (shared stores; empty when embedded)."""
        return {}

    def close(self) -> None:
        """Release the store's connection (a database store's pool belongs to the backend)."""
        return None


class SQLiteStreamStore(StreamStore):
    """:class:`StreamStore` on ``<data>/streams.db`` (one connection, a lock)."""

    def __init__(self, data_dir: Path) -> None:
        self._file = LockedSqlite(data_dir / STREAMS_FILE, "synchronous=FULL", script=_SCHEMA)

    def _conn(self) -> AbstractContextManager[SqlConn]:
        return self._file.conn()

    def _writer(self) -> AbstractContextManager[SqlConn]:
        return self._file.write()

    def close(self) -> None:
        self._file.close()
