"""``facerec gallery vacuum``: make PostgreSQL drop the bytes of erased people from its table files.

A deleted row is only *dead* in PostgreSQL: its bytes stay in the table, TOAST and index files until a
``VACUUM`` (which removed erased embeddings from the tables and the HNSW index in the test of docs/GALLERY.md,
"What erasure removes") or a ``VACUUM FULL`` (which rewrites the tables into new files: the only way the TOASTed
crops went). :func:`vacuum_personal_data` runs either over :data:`PERSONAL_TABLES`, one table at a time, under
``lock_timeout`` so that a busy table is reported instead of queueing every request behind the vacuum's lock
(``VACUUM FULL`` takes an exclusive lock: enrolment and identify on that table wait while it runs).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from service.gallery.postgres.connection import connect_checked, location
from service.gallery.postgres.errors import DatabaseConfigError

PERSONAL_TABLES = (
    "subjects",
    "faces",
    "face_crops",
    "face_embeddings",
    "observations",
    "namings",
    "events",
    "outbox",
    "video_jobs",
    "vector_outbox",
)
"""Tables whose rows hold a person's embedding, face crop or name (directly, or in a JSON payload or result):
what an erasure deletes from. ``vector_outbox`` exists only with ``FACEREC_VECTOR_BACKEND=milvus``; tables that
do not exist are skipped. ``audit_log`` holds ids only and is kept."""


class VacuumRefused(DatabaseConfigError):
    """A table could not be vacuumed: its lock was not granted in time, or the user may not vacuum it."""

    code = "vacuum_refused"


@dataclass(frozen=True, slots=True)
class TableVacuum:
    """One table's vacuum: its total size (heap, TOAST and indexes, bytes) before and after, and the seconds."""

    table: str
    bytes_before: int
    bytes_after: int
    seconds: float


def _size(conn: psycopg.Connection[Any], table: str) -> int:
    row = conn.execute("SELECT pg_total_relation_size(to_regclass(%s))", (table,)).fetchone()
    return int(row[0]) if row and row[0] is not None else 0


def vacuum_personal_data(
    url: str,
    *,
    full: bool = False,
    lock_timeout_s: float = 5.0,
    progress: Callable[[str], None] | None = None,
) -> list[TableVacuum]:
    """``VACUUM`` (or ``VACUUM FULL``) each existing table of :data:`PERSONAL_TABLES` on the database at ``url``.

    Raises :class:`DatabaseConfigError` when the database cannot be reached, and :class:`VacuumRefused` (after the
    tables before it are done) when a table's lock is not granted within ``lock_timeout_s`` seconds or the user
    lacks the right to vacuum it (PostgreSQL only warns and skips then: that warning is turned into the error).
    """
    refused: list[str] = []

    def on_notice(diag: psycopg.errors.Diagnostic) -> None:
        if diag.severity_nonlocalized == "WARNING" and diag.message_primary:
            refused.append(diag.message_primary)

    done: list[TableVacuum] = []
    with connect_checked(url, autocommit=True) as conn:
        conn.add_notice_handler(on_notice)
        conn.execute(sql.SQL("SET lock_timeout = {}").format(sql.Literal(f"{max(1, round(lock_timeout_s * 1000))}ms")))
        tables = [t for t in PERSONAL_TABLES if conn.execute("SELECT to_regclass(%s)", (t,)).fetchone() != (None,)]
        command = sql.SQL("VACUUM (FULL) {}") if full else sql.SQL("VACUUM {}")
        for table in tables:
            if progress is not None:
                progress(table)
            before, start = _size(conn, table), time.monotonic()
            try:
                conn.execute(command.format(sql.Identifier(table)))
            except psycopg.errors.LockNotAvailable:
                raise VacuumRefused(
                    f"{table} is in use: its lock was not granted within {lock_timeout_s:g} s "
                    f"({len(done)} of {len(tables)} tables done); run again in a quieter moment or with a longer "
                    "--lock-timeout"
                ) from None
            except psycopg.OperationalError as exc:
                why = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                raise DatabaseConfigError(
                    f"PostgreSQL at {location(url)} failed during the vacuum of {table}: {why}"
                ) from None
            if refused:
                raise VacuumRefused(f"{table} was not vacuumed: {refused[0]} (connect as the tables' owner)")
            done.append(TableVacuum(table, before, _size(conn, table), time.monotonic() - start))
    return done
