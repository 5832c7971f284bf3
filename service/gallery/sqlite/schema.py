"""The gallery's SQLite schema, versioned in ``schema_version`` and upgraded by :data:`MIGRATIONS` at open.

Change tracking for the index cache: face ids come from AUTOINCREMENT (never reused, increasing), so "adds
after a snapshot" are the faces with ``id > max_face_id``; deletions append to ``deletions`` whose ``seq`` is
also AUTOINCREMENT. A snapshot records both watermarks. Embeddings are 512-byte little-endian float32 blobs.
"""

from __future__ import annotations

import sqlite3
import uuid
from pathlib import Path

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


def migrate(conn: sqlite3.Connection, path: Path) -> None:
    """Inside the caller's write transaction: create or upgrade the schema to :data:`SCHEMA_VERSION` (a new
    database also gets its random ``gallery_uuid``). ``RuntimeError`` if the file is newer than this code."""
    conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
    current = conn.execute("SELECT max(version) FROM schema_version").fetchone()[0] or 0
    if current > SCHEMA_VERSION:
        raise RuntimeError(f"{path} has schema {current}, newer than this code ({SCHEMA_VERSION})")
    for version in range(current + 1, SCHEMA_VERSION + 1):
        for statement in MIGRATIONS[version].split(";"):
            if statement.strip():
                conn.execute(statement)
        conn.execute("INSERT INTO schema_version (version) VALUES (?)", (version,))
    if current == 0:
        conn.execute("INSERT INTO meta (key, value) VALUES ('gallery_uuid', ?)", (uuid.uuid4().hex,))


def schema_version(conn: sqlite3.Connection) -> int:
    """The version the database is at."""
    return int(conn.execute("SELECT max(version) FROM schema_version").fetchone()[0])


def meta_get(conn: sqlite3.Connection, key: str, default: str) -> str:
    """A value of the ``meta`` table, or ``default``."""
    row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    return str(row[0]) if row is not None else default


def meta_set(conn: sqlite3.Connection, key: str, value: str) -> None:
    """Insert or replace a value of the ``meta`` table (inside the caller's transaction)."""
    conn.execute(
        "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        (key, value),
    )
