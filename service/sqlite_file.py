"""Opening the service's small embedded SQLite files (keys, events, photos, video jobs, streams): one connection
shared between threads behind a lock, autocommit outside explicit transactions, WAL journal."""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from service.gallery.errors import StorageUnavailable
from service.gallery.sqlite.errors import storage_errors

log = logging.getLogger("facerec.storage")


@contextmanager
def usable(what: str) -> Iterator[None]:
    """Turn a file that cannot be opened (not a directory, not a database, unreadable) into
    :class:`StorageUnavailable` naming ``what``: one error line for the CLI, a logged reason for the server."""
    try:
        yield
    except (OSError, sqlite3.DatabaseError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise StorageUnavailable(f"{what} cannot be used: {reason}") from exc


def open_sqlite(path: Path, *pragmas: str, script: str = "") -> sqlite3.Connection:
    """A connection to ``path`` (its folder created) in WAL mode with ``pragmas`` (``"synchronous=FULL"``...),
    then ``script`` run (the file's ``CREATE ... IF NOT EXISTS`` schema); :class:`StorageUnavailable` when the
    file cannot be opened as a database."""
    with usable(str(path)):
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        try:
            for pragma in ("journal_mode=WAL", *pragmas):
                conn.execute(f"PRAGMA {pragma}")
            if script:
                conn.executescript(script)
        except BaseException:
            conn.close()
            raise
    return conn


class LockedSqlite:
    """One :func:`open_sqlite` connection behind a re-entrant lock."""

    def __init__(self, path: Path, *pragmas: str, script: str = "") -> None:
        self.path = path
        self._lock = threading.RLock()
        self._db = open_sqlite(path, *pragmas, script=script)

    @contextmanager
    def conn(self) -> Iterator[sqlite3.Connection]:
        """The connection, for statements that each commit by themselves; a full disk or a storage refusing
        writes is raised as ``StorageFull`` (507) / ``StorageUnavailable`` (503)."""
        with storage_errors(f"the storage of {self.path.name}"), self._lock:
            yield self._db

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` ... ``COMMIT`` under the lock; any exception rolls back; storage failures as in
        :meth:`conn`."""
        with storage_errors(f"the storage of {self.path.name}"), self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:  # SQLite may have rolled back already (a full disk, an I/O error)
                    with contextlib.suppress(sqlite3.Error):
                        self._db.execute("ROLLBACK")
                raise

    def checkpoint(self) -> bool:
        """Copy the WAL into the database file and truncate it to zero bytes: after an erasure (with
        ``secure_delete=ON``) the erased rows are then in neither file. False (logged) if it failed: the erasure
        itself is committed, and the WAL is checkpointed again at the next erasure and when the file is closed."""
        try:
            with self._lock:
                busy = self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
        except sqlite3.Error as e:
            log.warning("%s: WAL checkpoint after an erasure failed: %s", self.path.name, e)
            return False
        return not busy

    def close(self) -> None:
        with self._lock:
            self._db.close()
