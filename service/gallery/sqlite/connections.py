"""The SQLite connections of one gallery database: one writer, one reader per thread, private snapshot readers.

WAL journal, ``synchronous=FULL`` (a committed write survives a crash or power loss), ``secure_delete=ON``
(erased rows are overwritten with zeros, not left in free pages) and foreign keys on every connection. Every
write goes through :meth:`Connections.transaction` (the writer is not thread-safe: the gallery serialises
writers with its own lock). Connections never leave the ``service.gallery.sqlite`` package.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading
import weakref
from collections.abc import Iterator
from pathlib import Path

from service.gallery.sqlite.errors import storage_errors
from service.gallery.sqlite.schema import DB_NAME, migrate

log = logging.getLogger("facerec.gallery")

WRITER_CACHE_KIB = 8_192
"""SQLite page cache of the one writer connection, KiB. The writer only runs write transactions (and the few reads
inside them); what it writes stays in its cache, and enrolment writes a ~40 KiB PNG crop per face, so a 64 MiB cache
fills with crops over the first ~1,500 enrolled faces and grows the service's RSS by as much.
8 MiB still holds every B-tree interior page of a 1M-face gallery (~2 MiB by ``dbstat``, plus an estimated ~1.5 MiB
for the sha256 index and the crops); a transaction that writes more spills its pages to the WAL before the commit."""

READER_CACHE_KIB = 2_048
"""SQLite page cache of each per-thread reader connection, KiB. The service has dozens of worker threads, each with
its own reader; large caches fill slowly under load and the process's RSS creeps up with them. Readers do point
lookups; the OS page cache holds the file anyway."""


class Connections:
    """Opens (creating or migrating) ``<data_dir>/gallery.sqlite3`` and owns every connection to it."""

    def __init__(self, data_dir: Path) -> None:
        self.path = Path(data_dir) / DB_NAME
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._all_lock = threading.Lock()
        self._writer = self._connect(WRITER_CACHE_KIB)
        with self.transaction() as conn:
            migrate(conn, self.path)

    def _connect(self, cache_kib: int) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30.0)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA secure_delete=ON")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute(f"PRAGMA cache_size=-{int(cache_kib)}")
        with self._all_lock:
            self._all.append(conn)
        return conn

    def _reader(self) -> sqlite3.Connection:
        """This thread's read connection (autocommit: each statement sees the latest committed state), closed
        when the thread ends: worker pools retire idle threads and start new ones, and each kept reader would
        hold two file descriptors and its page cache for the life of the process."""
        reader: _Reader | None = getattr(self._local, "reader", None)
        if reader is None:
            reader = _Reader(self._connect(READER_CACHE_KIB))
            weakref.finalize(reader, self._drop, reader.conn)  # runs as the thread's locals are released
            self._local.reader = reader
        return reader.conn

    def _drop(self, conn: sqlite3.Connection) -> None:
        """Close a connection and forget it."""
        with self._all_lock:
            if conn in self._all:
                self._all.remove(conn)
        conn.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (``BEGIN IMMEDIATE``) on the writer: committed when the block ends (the commit
        is the acknowledgement: durable from then on), rolled back if it raises. A storage failure (full,
        read-only, I/O) becomes :class:`StorageFull` / :class:`StorageUnavailable`; nothing is then written."""
        with storage_errors():
            writer = self._writer
            if writer.in_transaction:  # left open by a rollback that failed (I/O error): retry it first
                self._rollback(writer)
            writer.execute("BEGIN IMMEDIATE")
            try:
                yield writer
                self._commit()
            except BaseException:
                self._rollback(writer)
                raise

    def _commit(self) -> None:
        self._writer.execute("COMMIT")

    @staticmethod
    def _rollback(conn: sqlite3.Connection) -> None:
        """Roll back the open write transaction, if any. Never raises: it runs while another error propagates
        (SQLite may already have rolled back after ``SQLITE_FULL``/``SQLITE_IOERR``)."""
        if conn.in_transaction:
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error as e:
                log.error("gallery: rollback failed: %s", e)

    @contextlib.contextmanager
    def snapshot_reader(self) -> Iterator[sqlite3.Connection]:
        """A private connection inside one read transaction: every read of the block sees one consistent state
        (long scans must not interleave with the per-thread readers' other reads)."""
        conn = self._connect(READER_CACHE_KIB)
        try:
            conn.execute("BEGIN")
            yield conn
            conn.execute("COMMIT")
        finally:
            self._drop(conn)

    def checkpoint(self) -> None:
        """Copy the WAL into the db file and truncate the WAL (so erased pages do not linger in it)."""
        self._writer.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def close(self) -> None:
        with self._all_lock:
            for conn in self._all:
                conn.close()
            self._all.clear()


class _Reader:
    """A thread's reader connection, held in the thread's ``threading.local`` slot (a finalizer closes it)."""

    __slots__ = ("__weakref__", "conn")

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
