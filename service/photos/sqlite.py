"""The embedded :class:`~service.photos.base.PhotoStore`: one SQLite file ``photos.sqlite3`` in the data dir, with
the SQL of :class:`~service.photos.sqlstore.SqlPhotoStore`.

WAL journal, ``synchronous=FULL`` (a committed write survives a crash or power loss), ``secure_delete=ON`` (an
erased face is overwritten, not left in free pages), foreign keys. One connection, serialised by a lock; every
write runs in :meth:`SQLitePhotoStore.transaction` (all or nothing; a full or read-only disk becomes the
gallery's ``StorageFull`` / ``StorageUnavailable``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

from service.gallery.sqlite.errors import storage_errors
from service.photos.sqlstore import SqlPhotoStore
from service.sqlconn import SqlConn
from service.sqlite_file import LockedSqlite

DB_NAME = "photos.sqlite3"

SCHEMA = """
CREATE TABLE IF NOT EXISTS photos (
    id TEXT PRIMARY KEY,
    sha256 TEXT NOT NULL UNIQUE,
    external_id TEXT,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS observations (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    photo_id TEXT NOT NULL REFERENCES photos(id) ON DELETE CASCADE,
    model_id TEXT NOT NULL,
    embedding BLOB NOT NULL,
    box TEXT NOT NULL,
    quality TEXT NOT NULL,
    score REAL NOT NULL,
    crop BLOB,
    subject_id TEXT,
    distance REAL,
    cluster_id INTEGER,
    face_id INTEGER,
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS obs_photo ON observations(photo_id);
CREATE INDEX IF NOT EXISTS obs_model ON observations(model_id, id);
CREATE INDEX IF NOT EXISTS obs_subject ON observations(subject_id) WHERE subject_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS obs_cluster ON observations(cluster_id) WHERE cluster_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS obs_unnamed_time ON observations(created_at) WHERE subject_id IS NULL;
CREATE TABLE IF NOT EXISTS cannot_link (a INTEGER NOT NULL, b INTEGER NOT NULL, PRIMARY KEY (a, b)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS cannot_link_b ON cannot_link(b);
CREATE TABLE IF NOT EXISTS merged_faces (
    face_id INTEGER PRIMARY KEY REFERENCES observations(id) ON DELETE CASCADE,
    grp INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS merged_faces_grp ON merged_faces(grp);
CREATE TRIGGER IF NOT EXISTS obs_erased AFTER DELETE ON observations BEGIN
    DELETE FROM cannot_link WHERE a = old.id OR b = old.id;
END;
CREATE TABLE IF NOT EXISTS namings (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    cluster_id INTEGER NOT NULL,
    faces TEXT NOT NULL,
    enrol TEXT NOT NULL,
    subject_id TEXT,
    name TEXT,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT OR IGNORE INTO counters VALUES ('cluster', 0), ('changes', 0);
"""


class SQLitePhotoStore(SqlPhotoStore):
    """:class:`~service.photos.base.PhotoStore` on one SQLite file; thread-safe (one lock)."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / DB_NAME
        with storage_errors():
            pragmas = ("synchronous=FULL", "secure_delete=ON", "foreign_keys=ON")
            self._file = LockedSqlite(self.path, *pragmas, script=SCHEMA)

    @contextmanager
    def transaction(self) -> Iterator[SqlConn]:
        """``BEGIN IMMEDIATE`` ... ``COMMIT`` under the lock; any exception rolls back (storage failures raised as
        the gallery's storage errors)."""
        with storage_errors(), self._file.write() as c:
            yield c

    def reader(self) -> AbstractContextManager[SqlConn]:
        return self._file.conn()

    def _forget(self) -> None:
        self._file.checkpoint()

    def close(self) -> None:
        self._file.close()
