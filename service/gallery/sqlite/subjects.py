"""Queries on the ``subjects`` table. Each takes the connection to run on (the caller's transaction for writes)."""

from __future__ import annotations

import json
import sqlite3
import time
import uuid
from collections.abc import Sequence
from typing import Any

from service.gallery.errors import SubjectNotFound
from service.gallery.types import Subject

_COLS = (
    "s.pk, s.id, s.name, s.metadata, s.created_at, s.updated_at, "
    "(SELECT count(*) FROM faces f WHERE f.subject_pk = s.pk), "
    "(SELECT min(f.id) FROM faces f WHERE f.subject_pk = s.pk)"
)


def _subject(row: Sequence[Any]) -> Subject:
    return Subject(
        id=row[1],
        name=row[2],
        metadata=json.loads(row[3]),
        created_at=row[4],
        updated_at=row[5],
        face_count=row[6],
        sample_face_id=row[7],
    )


def subject_pk(conn: sqlite3.Connection, subject_id: str) -> int:
    """The subject's creation-order key; :class:`SubjectNotFound` if there is none with that id."""
    row = conn.execute("SELECT pk FROM subjects WHERE id = ?", (subject_id,)).fetchone()
    if row is None:
        raise SubjectNotFound(f"no subject with id {subject_id!r}")
    return int(row[0])


def insert(conn: sqlite3.Connection, items: Sequence[tuple[str, dict[str, Any]]]) -> list[Subject]:
    """Insert subjects ``(name, metadata)``, each with a new uuid4-hex id."""
    now = time.time()
    out = [Subject(uuid.uuid4().hex, name, dict(meta), now, now, 0) for name, meta in items]
    conn.executemany(
        "INSERT INTO subjects (id, name, metadata, created_at, updated_at) VALUES (?, ?, ?, ?, ?)",
        [(s.id, s.name, json.dumps(s.metadata), now, now) for s in out],
    )
    return out


def get(conn: sqlite3.Connection, subject_id: str) -> Subject:
    row = conn.execute(f"SELECT {_COLS} FROM subjects s WHERE s.id = ?", (subject_id,)).fetchone()
    if row is None:
        raise SubjectNotFound(f"no subject with id {subject_id!r}")
    return _subject(row)


def page(conn: sqlite3.Connection, limit: int, after_pk: int) -> tuple[list[Subject], int | None]:
    """Subjects in creation order with ``pk > after_pk``; returns them and the last pk if more follow."""
    rows = conn.execute(
        f"SELECT {_COLS} FROM subjects s WHERE s.pk > ? ORDER BY s.pk LIMIT ?", (after_pk, limit + 1)
    ).fetchall()
    more = len(rows) > limit
    rows = rows[:limit]
    return [_subject(r) for r in rows], (int(rows[-1][0]) if more and rows else None)


def update(conn: sqlite3.Connection, subject_id: str, name: str | None, metadata: dict[str, Any] | None) -> Subject:
    """Rename and/or replace the metadata (None = unchanged); returns the subject as it now is."""
    subject_pk(conn, subject_id)
    now = time.time()
    if name is not None:
        conn.execute("UPDATE subjects SET name = ?, updated_at = ? WHERE id = ?", (name, now, subject_id))
    if metadata is not None:
        conn.execute(
            "UPDATE subjects SET metadata = ?, updated_at = ? WHERE id = ?", (json.dumps(metadata), now, subject_id)
        )
    return get(conn, subject_id)


def delete(conn: sqlite3.Connection, subject_id: str) -> list[tuple[int, str]]:
    """Erase a subject and its faces (logging each face in ``deletions``); returns their (face id, model)."""
    pk = subject_pk(conn, subject_id)
    faces = [(int(r[0]), str(r[1])) for r in conn.execute("SELECT id, model_id FROM faces WHERE subject_pk = ?", (pk,))]
    now = time.time()
    conn.executemany(
        "INSERT INTO deletions (face_id, model_id, deleted_at) VALUES (?, ?, ?)",
        [(fid, mid, now) for fid, mid in faces],
    )
    conn.execute("DELETE FROM faces WHERE subject_pk = ?", (pk,))
    conn.execute("DELETE FROM subjects WHERE pk = ?", (pk,))
    return faces


def by_pk(conn: sqlite3.Connection, pks: Sequence[int]) -> dict[int, tuple[str, str]]:
    """pk -> (subject id, name) for the given pks (those that still exist)."""
    if not pks:
        return {}
    marks = ",".join("?" * len(pks))
    rows = conn.execute(f"SELECT pk, id, name FROM subjects WHERE pk IN ({marks})", list(pks))
    return {int(r[0]): (r[1], r[2]) for r in rows}


def count(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT count(*) FROM subjects").fetchone()[0])
