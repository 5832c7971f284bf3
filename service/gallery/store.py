"""SQLite store: the durable truth of the gallery (subjects, faces with their embeddings, a deletions log).

WAL journal, ``synchronous=FULL`` (a committed write survives a crash or power loss), ``secure_delete=ON``
(erased rows are overwritten with zeros, not left in free pages) and foreign keys. The schema is versioned in
``schema_version`` and upgraded by :data:`MIGRATIONS` at open.

Change tracking for the index cache: face ids come from AUTOINCREMENT (never reused, increasing), so "adds
after a snapshot" are the faces with ``id > max_face_id``; deletions append to ``deletions`` whose ``seq`` is
also AUTOINCREMENT. A snapshot records both watermarks.

Embeddings are stored as 512-byte little-endian float32 blobs. One writer connection (serialised by the
caller's write lock) and one read connection per thread.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from embeddings.types import EMBEDDING_DIM
from service.gallery.errors import FaceNotFound, StorageError, StorageFull, StorageUnavailable, SubjectNotFound
from service.gallery.types import FaceRecord, NewFace, Subject

log = logging.getLogger("facerec.gallery")

DB_NAME = "gallery.sqlite3"
SCHEMA_VERSION = 2

MIGRATIONS: dict[int, str] = {
    1: """
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE subjects (
        pk INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT NOT NULL UNIQUE,
        name TEXT NOT NULL,
        metadata TEXT NOT NULL,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL
    );
    CREATE TABLE faces (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        subject_pk INTEGER NOT NULL REFERENCES subjects(pk) ON DELETE CASCADE,
        model_id TEXT NOT NULL,
        embedding BLOB NOT NULL,
        box TEXT,
        quality TEXT,
        image_sha256 TEXT,
        created_at REAL NOT NULL
    );
    CREATE INDEX faces_subject ON faces(subject_pk);
    CREATE INDEX faces_model ON faces(model_id, id);
    CREATE INDEX faces_sha256 ON faces(image_sha256) WHERE image_sha256 IS NOT NULL;
    CREATE TABLE deletions (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        face_id INTEGER NOT NULL,
        model_id TEXT NOT NULL,
        deleted_at REAL NOT NULL
    );
    CREATE INDEX deletions_model ON deletions(model_id, seq);
    """,
    2: """
    CREATE TABLE face_crops (
        face_id INTEGER PRIMARY KEY REFERENCES faces(id) ON DELETE CASCADE,
        png BLOB NOT NULL
    );
    CREATE TABLE face_embeddings (
        face_id INTEGER NOT NULL REFERENCES faces(id) ON DELETE CASCADE,
        model_id TEXT NOT NULL,
        embedding BLOB NOT NULL,
        created_at REAL NOT NULL,
        PRIMARY KEY (face_id, model_id)
    );
    CREATE INDEX face_embeddings_model ON face_embeddings(model_id, face_id);
    """,
}
"""Schema version -> SQL that upgrades from the previous version. Append; never edit a released one."""

_SUBJECT_COLS = (
    "s.pk, s.id, s.name, s.metadata, s.created_at, s.updated_at, "
    "(SELECT count(*) FROM faces f WHERE f.subject_pk = s.pk)"
)
_FACE_COLS = "f.id, s.id, f.model_id, f.box, f.quality, f.image_sha256, f.created_at"


def _subject(row: Sequence[Any]) -> Subject:
    return Subject(
        id=row[1],
        name=row[2],
        metadata=json.loads(row[3]),
        created_at=row[4],
        updated_at=row[5],
        face_count=row[6],
    )


def _face(row: Sequence[Any]) -> FaceRecord:
    return FaceRecord(
        id=row[0],
        subject_id=row[1],
        model_id=row[2],
        box=json.loads(row[3]) if row[3] is not None else None,
        quality=json.loads(row[4]) if row[4] is not None else None,
        image_sha256=row[5],
        created_at=row[6],
    )


def _vectors(blobs: Sequence[bytes]) -> npt.NDArray[np.float32]:
    if not blobs:
        return np.zeros((0, EMBEDDING_DIM), np.float32)
    return np.frombuffer(b"".join(blobs), dtype="<f4").reshape(len(blobs), EMBEDDING_DIM).astype(np.float32)


_FULL_SQLITE = {sqlite3.SQLITE_FULL}
_UNAVAILABLE_SQLITE = {
    sqlite3.SQLITE_READONLY,
    sqlite3.SQLITE_IOERR,
    sqlite3.SQLITE_CANTOPEN,
    sqlite3.SQLITE_PERM,
    sqlite3.SQLITE_BUSY,
    sqlite3.SQLITE_LOCKED,
    sqlite3.SQLITE_PROTOCOL,
}
_FULL_ERRNO = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
_UNAVAILABLE_ERRNO = {errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO}
_FULL_MSG = "the gallery's storage is full; nothing was stored. Free disk space, then retry"
_UNAVAILABLE_MSG = "the gallery's storage refuses writes ({why}); nothing was stored. Reads still work"


def storage_error(exc: BaseException) -> StorageError | None:
    """The :class:`StorageError` for a failed write's SQLite or OS error, or ``None`` if it is something else.

    SQLite reports a full disk as ``SQLITE_FULL`` ("database or disk is full"), a read-only file or file system
    as ``SQLITE_READONLY`` and a failing device as ``SQLITE_IOERR``; the OS as ``ENOSPC``/``EROFS``/``EIO``.
    """
    if isinstance(exc, StorageError):
        return exc
    if isinstance(exc, sqlite3.Error):
        code = getattr(exc, "sqlite_errorcode", None)
        primary = code & 0xFF if isinstance(code, int) else None
        text = str(exc).lower()
        if primary in _FULL_SQLITE or (primary is None and "disk is full" in text):
            return StorageFull(_FULL_MSG)
        if primary in _UNAVAILABLE_SQLITE or (
            primary is None and any(w in text for w in ("readonly", "read-only", "disk i/o error", "locked"))
        ):
            name = getattr(exc, "sqlite_errorname", None) or text
            return StorageUnavailable(_UNAVAILABLE_MSG.format(why=name))
        return None
    if isinstance(exc, OSError):
        if exc.errno in _FULL_ERRNO:
            return StorageFull(_FULL_MSG)
        if exc.errno in _UNAVAILABLE_ERRNO:
            return StorageUnavailable(_UNAVAILABLE_MSG.format(why=errno.errorcode.get(exc.errno or 0, "OSError")))
    return None


@contextlib.contextmanager
def storage_errors() -> Iterator[None]:
    """Re-raise a storage failure (full, read-only, I/O) of the block as :class:`StorageFull` or
    :class:`StorageUnavailable`; every other exception passes unchanged."""
    try:
        yield
    except (sqlite3.Error, OSError) as e:
        err = storage_error(e)
        if err is None or err is e:
            raise
        log.error("gallery: write refused by the storage: %s", e)
        raise err from e


WRITER_CACHE_KIB = 8_192
"""SQLite page cache of the one writer connection, KiB. The writer only runs write transactions (and the few reads
inside them); what it writes stays in its cache, and enrolment writes a ~40 KiB PNG crop per face, so a 64 MiB cache
filled with crops over the first ~1,500 enrolled faces and grew the service's RSS by as much (the soak's creep).
8 MiB still holds every B-tree interior page of a 1M-face gallery (~2 MiB by ``dbstat``, plus an estimated ~1.5 MiB
for the sha256 index and the crops); a transaction that writes more spills its pages to the WAL before the commit."""

READER_CACHE_KIB = 2_048
"""SQLite page cache of each per-thread reader connection, KiB. The service has dozens of worker threads, each with
its own reader; at the writer's 64 MiB each, their caches filled slowly under load and the process's RSS crept up
(the soak's growth). Readers do point lookups; the OS page cache holds the file anyway."""


class SQLiteStore:
    """Low-level SQL access. Not thread-safe for writes: the gallery serialises writers with one lock."""

    def __init__(self, data_dir: Path) -> None:
        self.path = Path(data_dir) / DB_NAME
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._all_lock = threading.Lock()
        self._writer = self._connect()
        self._migrate()
        self.gallery_uuid = self._meta("gallery_uuid")

    # ---------------------------------------------------------------- connections and schema
    def _connect(self, cache_kib: int = WRITER_CACHE_KIB) -> sqlite3.Connection:
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
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect(READER_CACHE_KIB)
            self._local.conn = conn
        return conn

    @storage_errors()
    def _migrate(self) -> None:
        w = self._writer
        w.execute("BEGIN IMMEDIATE")
        try:
            w.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            row = w.execute("SELECT max(version) FROM schema_version").fetchone()
            current = row[0] or 0
            if current > SCHEMA_VERSION:
                raise RuntimeError(f"{self.path} has schema {current}, newer than this code ({SCHEMA_VERSION})")
            for version in range(current + 1, SCHEMA_VERSION + 1):
                for statement in MIGRATIONS[version].split(";"):
                    if statement.strip():
                        w.execute(statement)
                w.execute("INSERT INTO schema_version (version) VALUES (?)", (version,))
            if current == 0:
                w.execute("INSERT INTO meta (key, value) VALUES ('gallery_uuid', ?)", (uuid.uuid4().hex,))
            w.execute("COMMIT")
        except BaseException:
            w.execute("ROLLBACK")
            raise

    def _meta(self, key: str) -> str:
        row = self._writer.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return str(row[0])

    def schema_version(self) -> int:
        return int(self._reader().execute("SELECT max(version) FROM schema_version").fetchone()[0])

    def close(self) -> None:
        with self._all_lock:
            for conn in self._all:
                conn.close()
            self._all.clear()

    def checkpoint(self) -> None:
        """Copy the WAL into the db file and truncate the WAL (so erased pages do not linger in it)."""
        self._writer.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    # ---------------------------------------------------------------- transactions (writer)
    def begin(self) -> sqlite3.Connection:
        """Start a write transaction on the writer connection; pair with :meth:`commit` / :meth:`rollback`."""
        if self._writer.in_transaction:  # left open by a rollback that failed (I/O error): retry it first
            self.rollback()
        self._writer.execute("BEGIN IMMEDIATE")
        return self._writer

    def commit(self) -> None:
        self._writer.execute("COMMIT")

    def rollback(self) -> None:
        """Roll back the open write transaction, if any. Never raises: it runs while another error propagates
        (SQLite may already have rolled back after ``SQLITE_FULL``/``SQLITE_IOERR``)."""
        if self._writer.in_transaction:
            try:
                self._writer.execute("ROLLBACK")
            except sqlite3.Error as e:
                log.error("gallery: rollback failed: %s", e)

    # ---------------------------------------------------------------- subjects
    def subject_pk(self, subject_id: str, conn: sqlite3.Connection | None = None) -> int:
        row = (conn or self._reader()).execute("SELECT pk FROM subjects WHERE id = ?", (subject_id,)).fetchone()
        if row is None:
            raise SubjectNotFound(f"no subject with id {subject_id!r}")
        return int(row[0])

    @storage_errors()
    def insert_subjects(self, items: Sequence[tuple[str, dict[str, Any]]]) -> list[Subject]:
        """Create subjects ``(name, metadata)`` in one transaction, each with a new uuid4-hex id."""
        now = time.time()
        out = [Subject(uuid.uuid4().hex, name, dict(meta), now, now, 0) for name, meta in items]
        w = self.begin()
        try:
            w.executemany(
                "INSERT INTO subjects (id, name, metadata, created_at, updated_at) VALUES (?, ?, ?, ?, ?)",
                [(s.id, s.name, json.dumps(s.metadata), now, now) for s in out],
            )
            self.commit()
        except BaseException:
            self.rollback()
            raise
        return out

    def get_subject(self, subject_id: str, conn: sqlite3.Connection | None = None) -> Subject:
        row = (
            (conn or self._reader())
            .execute(f"SELECT {_SUBJECT_COLS} FROM subjects s WHERE s.id = ?", (subject_id,))
            .fetchone()
        )
        if row is None:
            raise SubjectNotFound(f"no subject with id {subject_id!r}")
        return _subject(row)

    def list_subjects(self, limit: int, after_pk: int) -> tuple[list[Subject], int | None]:
        """Subjects in creation order with ``pk > after_pk``; returns them and the last pk if more follow."""
        rows = (
            self._reader()
            .execute(
                f"SELECT {_SUBJECT_COLS} FROM subjects s WHERE s.pk > ? ORDER BY s.pk LIMIT ?",
                (after_pk, limit + 1),
            )
            .fetchall()
        )
        more = len(rows) > limit
        rows = rows[:limit]
        return [_subject(r) for r in rows], (int(rows[-1][0]) if more and rows else None)

    @storage_errors()
    def update_subject(self, subject_id: str, name: str | None, metadata: dict[str, Any] | None) -> Subject:
        w = self.begin()
        try:
            self.subject_pk(subject_id, w)
            now = time.time()
            if name is not None:
                w.execute("UPDATE subjects SET name = ?, updated_at = ? WHERE id = ?", (name, now, subject_id))
            if metadata is not None:
                w.execute(
                    "UPDATE subjects SET metadata = ?, updated_at = ? WHERE id = ?",
                    (json.dumps(metadata), now, subject_id),
                )
            subject = self.get_subject(subject_id, w)
            self.commit()
        except BaseException:
            self.rollback()
            raise
        return subject

    @storage_errors()
    def delete_subject(self, subject_id: str) -> list[tuple[int, str]]:
        """Erase a subject and its faces in one transaction (logging each face); returns (face id, model)."""
        w = self.begin()
        try:
            pk = self.subject_pk(subject_id, w)
            faces = [
                (int(r[0]), str(r[1])) for r in w.execute("SELECT id, model_id FROM faces WHERE subject_pk = ?", (pk,))
            ]
            now = time.time()
            w.executemany(
                "INSERT INTO deletions (face_id, model_id, deleted_at) VALUES (?, ?, ?)",
                [(fid, mid, now) for fid, mid in faces],
            )
            w.execute("DELETE FROM faces WHERE subject_pk = ?", (pk,))
            w.execute("DELETE FROM subjects WHERE pk = ?", (pk,))
            self.commit()
        except BaseException:
            self.rollback()
            raise
        return faces

    def subjects_by_pk(self, pks: Sequence[int]) -> dict[int, tuple[str, str]]:
        """pk -> (subject id, name) for the given pks (those that still exist)."""
        if not pks:
            return {}
        marks = ",".join("?" * len(pks))
        rows = self._reader().execute(f"SELECT pk, id, name FROM subjects WHERE pk IN ({marks})", list(pks))
        return {int(r[0]): (r[1], r[2]) for r in rows}

    # ---------------------------------------------------------------- faces
    def insert_faces(
        self, conn: sqlite3.Connection, rows: Sequence[tuple[int, str, NewFace, bytes, bytes | None]]
    ) -> list[FaceRecord]:
        """Insert ``(subject_pk, subject_id, face, embedding blob, crop PNG or None)`` rows inside the caller's
        transaction; a crop goes to ``face_crops`` in the same transaction as its face."""
        now = time.time()
        out: list[FaceRecord] = []
        cur = conn.cursor()
        for pk, sid, face, blob, crop_png in rows:
            cur.execute(
                "INSERT INTO faces (subject_pk, model_id, embedding, box, quality, image_sha256, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    pk,
                    face.model_id,
                    blob,
                    json.dumps(face.box) if face.box is not None else None,
                    json.dumps(face.quality) if face.quality is not None else None,
                    face.image_sha256,
                    now,
                ),
            )
            fid = cur.lastrowid
            assert fid is not None
            if crop_png is not None:
                cur.execute("INSERT INTO face_crops (face_id, png) VALUES (?, ?)", (fid, crop_png))
            out.append(FaceRecord(fid, sid, face.model_id, face.box, face.quality, face.image_sha256, now))
        return out

    @storage_errors()
    def delete_face(self, face_id: int) -> str:
        """Erase one face (logging it); returns its model id."""
        w = self.begin()
        try:
            row = w.execute("SELECT model_id FROM faces WHERE id = ?", (face_id,)).fetchone()
            if row is None:
                raise FaceNotFound(f"no face with id {face_id}")
            w.execute(
                "INSERT INTO deletions (face_id, model_id, deleted_at) VALUES (?, ?, ?)",
                (face_id, row[0], time.time()),
            )
            w.execute("DELETE FROM faces WHERE id = ?", (face_id,))
            self.commit()
        except BaseException:
            self.rollback()
            raise
        return str(row[0])

    def get_face(self, face_id: int) -> FaceRecord:
        row = (
            self._reader()
            .execute(
                f"SELECT {_FACE_COLS} FROM faces f JOIN subjects s ON s.pk = f.subject_pk WHERE f.id = ?",
                (face_id,),
            )
            .fetchone()
        )
        if row is None:
            raise FaceNotFound(f"no face with id {face_id}")
        return _face(row)

    def list_faces(self, subject_id: str) -> list[FaceRecord]:
        conn = self._reader()
        pk = self.subject_pk(subject_id, conn)
        rows = conn.execute(
            f"SELECT {_FACE_COLS} FROM faces f JOIN subjects s ON s.pk = f.subject_pk "
            "WHERE f.subject_pk = ? ORDER BY f.id",
            (pk,),
        )
        return [_face(r) for r in rows]

    def find_face_by_sha256(self, sha256: str, subject_id: str | None) -> FaceRecord | None:
        sql = f"SELECT {_FACE_COLS} FROM faces f JOIN subjects s ON s.pk = f.subject_pk WHERE f.image_sha256 = ?"
        args: list[Any] = [sha256]
        if subject_id is not None:
            sql += " AND s.id = ?"
            args.append(subject_id)
        row = self._reader().execute(sql + " ORDER BY f.id LIMIT 1", args).fetchone()
        return _face(row) if row is not None else None

    def face_embeddings(self, subject_id: str, model_id: str) -> tuple[npt.NDArray[np.float32], list[str]]:
        """The subject's embeddings of ``model_id`` (n, 128) and the models of all its faces."""
        conn = self._reader()
        pk = self.subject_pk(subject_id, conn)
        rows = conn.execute("SELECT model_id, embedding FROM faces WHERE subject_pk = ? ORDER BY id", (pk,))
        models: list[str] = []
        blobs: list[bytes] = []
        for mid, blob in rows:
            models.append(mid)
            if mid == model_id:
                blobs.append(blob)
        return _vectors(blobs), models

    # ---------------------------------------------------------------- what the index needs
    def iter_embeddings(
        self, model_id: str, after_id: int = 0, chunk: int = 50_000
    ) -> Iterator[tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]]:
        """Yield ``(face ids, embeddings)`` of ``model_id`` with ``id > after_id``, in id order, by chunks.

        Reads inside one read transaction so the chunks form one consistent snapshot of the table.
        """
        conn = self._connect(READER_CACHE_KIB)  # private: a long read must not interleave with other reads
        try:
            conn.execute("BEGIN")
            last = after_id
            while True:
                rows = conn.execute(
                    "SELECT id, embedding FROM faces WHERE model_id = ? AND id > ? ORDER BY id LIMIT ?",
                    (model_id, last, chunk),
                ).fetchall()
                if not rows:
                    break
                ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
                yield ids, _vectors([r[1] for r in rows])
                last = int(ids[-1])
            conn.execute("COMMIT")
        finally:
            conn.close()
            with self._all_lock:
                if conn in self._all:
                    self._all.remove(conn)

    def deletions_after(self, model_id: str, seq: int) -> npt.NDArray[np.int64]:
        rows = self._reader().execute(
            "SELECT face_id FROM deletions WHERE model_id = ? AND seq > ? ORDER BY seq", (model_id, seq)
        )
        return np.fromiter((r[0] for r in rows), dtype=np.int64)

    @storage_errors()
    def prune_deletions(self, upto_seq: int) -> None:
        """Forget deletions every snapshot already contains (the seq counter itself keeps increasing)."""
        w = self.begin()
        try:
            w.execute("DELETE FROM deletions WHERE seq <= ?", (upto_seq,))
            w.execute(
                "INSERT INTO meta (key, value) VALUES ('pruned_deletions_upto', ?) "
                "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                (str(upto_seq),),
            )
            self.commit()
        except BaseException:
            self.rollback()
            raise

    def watermarks(self, conn: sqlite3.Connection | None = None) -> tuple[int, int]:
        """``(max face id ever assigned, max deletion seq ever assigned)``; both only grow."""
        rows = dict(
            (conn or self._reader())
            .execute("SELECT name, seq FROM sqlite_sequence WHERE name IN ('faces', 'deletions')")
            .fetchall()
        )
        return int(rows.get("faces", 0)), int(rows.get("deletions", 0))

    def face_subject_pairs(self) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        """All ``(face id, subject pk)`` pairs, as two arrays."""
        rows = self._reader().execute("SELECT id, subject_pk FROM faces").fetchall()
        if not rows:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        arr = np.array(rows, dtype=np.int64)
        return arr[:, 0], arr[:, 1]

    def faces_by_model(self) -> dict[str, int]:
        rows = self._reader().execute("SELECT model_id, count(*) FROM faces GROUP BY model_id")
        return {str(m): int(n) for m, n in rows}

    def count_faces(self, model_id: str) -> int:
        row = self._reader().execute("SELECT count(*) FROM faces WHERE model_id = ?", (model_id,)).fetchone()
        return int(row[0])

    def count_subjects(self) -> int:
        return int(self._reader().execute("SELECT count(*) FROM subjects").fetchone()[0])

    def face_ids(self, model_id: str) -> npt.NDArray[np.int64]:
        rows = self._reader().execute("SELECT id FROM faces WHERE model_id = ? ORDER BY id", (model_id,))
        return np.fromiter((r[0] for r in rows), dtype=np.int64)

    def meta_get(self, key: str, default: str) -> str:
        row = self._reader().execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return str(row[0]) if row is not None else default

    # ---------------------------------------------------------------- crops and re-indexing
    def crop_png(self, face_id: int) -> bytes | None:
        """The stored aligned crop of a face (PNG bytes), or None if none was stored."""
        row = self._reader().execute("SELECT png FROM face_crops WHERE face_id = ?", (face_id,)).fetchone()
        return bytes(row[0]) if row is not None else None

    def reindex_counts(self, model_id: str, conn: sqlite3.Connection | None = None) -> dict[str, int]:
        """For a re-index to ``model_id``: ``faces`` (all), ``todo`` (faces of another model), ``staged`` (of
        those, with an embedding of ``model_id`` already in ``face_embeddings``) and ``without_crop`` (of
        those, with no stored crop and no staged embedding: they cannot be re-embedded)."""
        row = (
            (conn or self._reader())
            .execute(
                "SELECT count(*), "
                "  coalesce(sum(f.model_id != :m), 0), "
                "  coalesce(sum(f.model_id != :m AND e.face_id IS NOT NULL), 0), "
                "  coalesce(sum(f.model_id != :m AND e.face_id IS NULL AND c.face_id IS NULL), 0) "
                "FROM faces f "
                "LEFT JOIN face_embeddings e ON e.face_id = f.id AND e.model_id = :m "
                "LEFT JOIN face_crops c ON c.face_id = f.id",
                {"m": model_id},
            )
            .fetchone()
        )
        return {"faces": int(row[0]), "todo": int(row[1]), "staged": int(row[2]), "without_crop": int(row[3])}

    def crops_to_embed(self, model_id: str, after_id: int, limit: int) -> list[tuple[int, bytes]]:
        """Up to ``limit`` ``(face id, crop PNG)`` of faces with ``id > after_id`` not of ``model_id`` and with no
        staged embedding of ``model_id``, in id order."""
        rows = self._reader().execute(
            "SELECT f.id, c.png FROM faces f JOIN face_crops c ON c.face_id = f.id "
            "WHERE f.id > ? AND f.model_id != ? AND NOT EXISTS "
            "(SELECT 1 FROM face_embeddings e WHERE e.face_id = f.id AND e.model_id = ?) "
            "ORDER BY f.id LIMIT ?",
            (after_id, model_id, model_id, limit),
        )
        return [(int(r[0]), bytes(r[1])) for r in rows]

    @storage_errors()
    def stage_embeddings(self, model_id: str, face_ids: Sequence[int], blobs: Sequence[bytes]) -> int:
        """Store embeddings of ``model_id`` for existing faces in ``face_embeddings`` (one transaction); a face
        erased meanwhile is skipped (its row would only be cascaded away). Returns the rows written."""
        now = time.time()
        w = self.begin()
        try:
            cur = w.cursor()
            written = 0
            for fid, blob in zip(face_ids, blobs, strict=True):
                cur.execute(
                    "INSERT OR REPLACE INTO face_embeddings (face_id, model_id, embedding, created_at) "
                    "SELECT ?, ?, ?, ? WHERE EXISTS (SELECT 1 FROM faces WHERE id = ?)",
                    (fid, model_id, blob, now, fid),
                )
                written += cur.rowcount
            self.commit()
        except BaseException:
            self.rollback()
            raise
        return written

    def switch_faces(self, conn: sqlite3.Connection, model_id: str) -> list[tuple[int, str]]:
        """Inside the caller's transaction: give every face of another model its staged embedding of
        ``model_id`` (``faces.model_id`` and ``faces.embedding`` rewritten), log each old (face, model) in
        ``deletions`` (so the old model's index snapshot replays them as erased) and drop the staged rows.
        The caller has checked that every such face has a staged row. Returns the (face id, old model) pairs."""
        old = [
            (int(r[0]), str(r[1]))
            for r in conn.execute("SELECT id, model_id FROM faces WHERE model_id != ? ORDER BY id", (model_id,))
        ]
        now = time.time()
        conn.executemany(
            "INSERT INTO deletions (face_id, model_id, deleted_at) VALUES (?, ?, ?)",
            [(fid, mid, now) for fid, mid in old],
        )
        conn.execute(
            "UPDATE faces SET model_id = :m, embedding = "
            "(SELECT e.embedding FROM face_embeddings e WHERE e.face_id = faces.id AND e.model_id = :m) "
            "WHERE model_id != :m",
            {"m": model_id},
        )
        conn.execute("DELETE FROM face_embeddings WHERE model_id = ?", (model_id,))
        return old

    def embedding_blobs(self, face_ids: Sequence[int], model_id: str | None = None) -> dict[int, bytes]:
        """The current embeddings (``faces.embedding``, 128 little-endian float32) of those of these faces that
        exist (and are of ``model_id`` if given), by face id; a face erased meanwhile is simply absent."""
        conn = self._reader()
        blobs: dict[int, bytes] = {}
        ids = [int(f) for f in face_ids]
        of_model = "" if model_id is None else " AND model_id = ?"
        for start in range(0, len(ids), 900):
            part = ids[start : start + 900]
            marks = ",".join("?" * len(part))
            args = part if model_id is None else [*part, model_id]
            for fid, blob in conn.execute(f"SELECT id, embedding FROM faces WHERE id IN ({marks}){of_model}", args):
                blobs[int(fid)] = blob
        return blobs

    def embeddings_of(self, face_ids: Sequence[int]) -> npt.NDArray[np.float32]:
        """The current embeddings (``faces.embedding``) of these faces, in the order given."""
        if not len(face_ids):
            return _vectors([])
        blobs = self.embedding_blobs(face_ids)
        return _vectors([blobs[int(f)] for f in face_ids])
