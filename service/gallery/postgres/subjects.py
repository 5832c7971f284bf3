"""Subjects in PostgreSQL: create, read, page, rename and erase (faces and crops cascade). Each function runs on
a pooled autocommit connection; one that writes more than one statement opens its own transaction."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Sequence
from typing import Any

import psycopg

from service.gallery.cursor import decode_cursor, encode_cursor
from service.gallery.errors import SubjectNotFound
from service.gallery.postgres.rows import SUBJECT_COLS, subject, to_json
from service.gallery.types import Subject


def create(conn: psycopg.Connection[Any], items: Sequence[tuple[str, dict[str, Any] | None]]) -> list[Subject]:
    """New subjects ``(name, metadata)`` with fresh ids, in one statement."""
    now = time.time()
    out = [Subject(uuid.uuid4().hex, name, dict(meta or {}), now, now, 0) for name, meta in items]
    if out:
        conn.execute(
            "INSERT INTO subjects (id, name, metadata, created_at, updated_at) "
            "SELECT u.id, u.name, u.metadata, %s, %s FROM unnest(%s::text[], %s::text[], %s::jsonb[]) "
            "WITH ORDINALITY AS u(id, name, metadata, i) ORDER BY u.i",
            (now, now, [s.id for s in out], [s.name for s in out], [json.dumps(s.metadata) for s in out]),
        )
    return out


def get(conn: psycopg.Connection[Any], subject_id: str) -> Subject:
    """The subject ``subject_id`` with its face count; :class:`SubjectNotFound` if there is none."""
    row = conn.execute(f"SELECT {SUBJECT_COLS} FROM subjects s WHERE s.id = %s", (subject_id,)).fetchone()
    if row is None:
        raise SubjectNotFound(f"no subject with id {subject_id!r}")
    return subject(row)


def pk(conn: psycopg.Connection[Any], subject_id: str) -> int:
    """The internal key of ``subject_id``; :class:`SubjectNotFound` if there is none."""
    row = conn.execute("SELECT pk FROM subjects WHERE id = %s", (subject_id,)).fetchone()
    if row is None:
        raise SubjectNotFound(f"no subject with id {subject_id!r}")
    return int(row[0])


def page(conn: psycopg.Connection[Any], limit: int, cursor: str | None) -> tuple[list[Subject], str | None]:
    """Up to ``limit`` subjects in creation order after ``cursor``, and the cursor of the next page (or None)."""
    after = decode_cursor(cursor) if cursor else 0
    rows = conn.execute(
        f"SELECT {SUBJECT_COLS} FROM subjects s WHERE s.pk > %s ORDER BY s.pk LIMIT %s", (after, limit + 1)
    ).fetchall()
    more = len(rows) > limit
    rows = rows[:limit]
    return [subject(r) for r in rows], (encode_cursor(int(rows[-1][0])) if more and rows else None)


def update(
    conn: psycopg.Connection[Any], subject_id: str, name: str | None, metadata: dict[str, Any] | None
) -> Subject:
    """Rename and/or replace the metadata of ``subject_id`` (``updated_at`` moves only when something is given)."""
    with conn.transaction():
        row = conn.execute(
            "UPDATE subjects SET name = coalesce(%s, name), metadata = coalesce(%s::jsonb, metadata), "
            "updated_at = CASE WHEN %s OR %s THEN %s ELSE updated_at END WHERE id = %s RETURNING pk",
            (name, to_json(metadata), name is not None, metadata is not None, time.time(), subject_id),
        ).fetchone()
        if row is None:
            raise SubjectNotFound(f"no subject with id {subject_id!r}")
        return get(conn, subject_id)


def delete(conn: psycopg.Connection[Any], subject_id: str) -> int:
    """Erase ``subject_id`` with its faces and crops (cascade); returns how many faces it had. The row lock comes
    first, so faces committed by an enrolment it waited for are counted too."""
    with conn.transaction():
        row = conn.execute("SELECT pk FROM subjects WHERE id = %s FOR UPDATE", (subject_id,)).fetchone()
        if row is None:
            raise SubjectNotFound(f"no subject with id {subject_id!r}")
        count = conn.execute("SELECT count(*) FROM faces WHERE subject_pk = %s", (row[0],)).fetchone()
        conn.execute("DELETE FROM subjects WHERE pk = %s", (row[0],))
    return int(count[0]) if count else 0
