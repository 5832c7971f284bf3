"""The media and photo part of ``facerec gallery migrate``: copy a data dir's events (and webhook outbox),
streams registry, video jobs and photo library (``events.db``, ``streams.db``, ``videos.db``, ``photos.sqlite3``)
into the PostgreSQL tables of :mod:`service.pgstores`.

Ids are kept (photo observation ids, which clusters and cannot-links refer to; event, stream, job and photo ids);
event ``seq`` is renumbered in the same order. Every column of each SQLite table is copied
(:func:`copied_columns` reads them from both schemas). Each chunk is one transaction and every row is inserted with
``ON CONFLICT DO NOTHING``, so running it again after an interruption continues without duplicates. Video jobs
become the jobs of the data dir's replica id (:func:`service.pgstores.media.replica_id`): a replica started on
this data dir processes the queued ones (their uploads are in it). Run it with the server of the data dir stopped.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from service.gallery.postgres.errors import DatabaseConfigError
from service.pgstores.media import replica_id

ProgressFn = Callable[[str, int, int], None]


@dataclass(frozen=True)
class _Table:
    """One table to copy: ``name`` in ``file`` into ``target``, read in ``order``, each row skipped when it
    conflicts on ``conflict``; ``owned``: the target's ``owner`` column gets the data dir's replica id. The columns
    are not listed here: :func:`copied_columns` reads them from both schemas."""

    file: str
    name: str
    target: str
    order: str
    conflict: str
    owned: bool = False


TABLES = (
    _Table("events.db", "events", "events", "seq", "(id)"),
    _Table("events.db", "outbox", "outbox", "rowid", "(event_id)"),
    _Table("streams.db", "streams", "streams", "rowid", "(id)"),
    _Table("videos.db", "jobs", "video_jobs", "rowid", "(id)", owned=True),
    _Table("photos.sqlite3", "photos", "photos", "rowid", "(id)"),
    _Table("photos.sqlite3", "observations", "observations", "id", "(id)"),
    _Table("photos.sqlite3", "cannot_link", "cannot_link", "a, b", "(a, b)"),
    _Table("photos.sqlite3", "merged_faces", "merged_faces", "face_id", "(face_id)"),
    _Table("photos.sqlite3", "namings", "namings", "id", "(id)"),
)
"""In dependency order (events before their outbox rows, photos before their observations)."""


class SchemaMismatch(DatabaseConfigError):
    """A source table has a column its target table lacks: copying it would lose that column's data (``gallery
    migrate`` prints the message and exits 2, as for any database it cannot use)."""


def copied_columns(src: sqlite3.Connection, pg: psycopg.Connection[Any], table: _Table) -> list[str]:
    """The columns of ``table`` to copy, in the source's order: every column of the SQLite table (``PRAGMA
    table_info``) except those the PostgreSQL target generates itself (``GENERATED ALWAYS``: ``events.seq``, which
    is renumbered). A source written before a column existed copies the columns it has (the target's defaults fill
    the rest). :class:`SchemaMismatch` if the target lacks a source column."""
    source = [str(row[1]) for row in src.execute(f"PRAGMA table_info({_quoted(table.name)})")]
    # the target resolved through the search path, as the INSERT resolves it
    regclass = pg.execute("SELECT to_regclass(%s)::oid", (table.target,)).fetchone()
    if not regclass or regclass[0] is None:
        path = pg.execute("SHOW search_path").fetchone()
        raise SchemaMismatch(
            f"the PostgreSQL table {table.target} is not in the connection's search path ({path[0] if path else '?'}), "
            "though the schema migration creates it: check the database URL's search_path"
        )
    target = {
        str(name): bool(always)
        for name, always in pg.execute(
            "SELECT attname, attidentity = 'a' OR attgenerated = 's' FROM pg_attribute"
            " WHERE attrelid = %s AND attnum > 0 AND NOT attisdropped",
            (regclass[0],),
        )
    }
    missing = [c for c in source if c not in target]
    if missing:
        raise SchemaMismatch(
            f"{table.file}: {table.name} has columns {', '.join(missing)} that the PostgreSQL table {table.target} "
            "lacks (was the data dir written by a newer facerec?); migrate with the version that wrote it"
        )
    return [c for c in source if not target[c]]


def _quoted(name: str) -> str:
    """An SQLite identifier, quoted."""
    return '"' + name.replace('"', '""') + '"'


def copy_media(
    data_dir: Path, url: str, *, batch: int = 2_000, progress: ProgressFn | None = None
) -> dict[str, tuple[int, int]]:
    """Copy every table of :data:`TABLES` whose file exists in ``data_dir`` into the (migrated) database at
    ``url``; returns ``table -> (rows in the source, rows in the target)``."""
    report = progress or (lambda stage, done, total: None)
    owner = replica_id(data_dir)
    counts: dict[str, tuple[int, int]] = {}
    with psycopg.connect(url, autocommit=True) as pg:  # each chunk its own transaction, reads outside them
        for table in TABLES:
            path = data_dir / table.file
            if not path.is_file():
                continue
            with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as src:
                if (
                    src.execute(
                        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (table.name,)
                    ).fetchone()
                    is None
                ):
                    continue  # a file written before the table existed (e.g. photos.sqlite3 before namings)
                total = int(src.execute(f"SELECT COUNT(*) FROM {table.name}").fetchone()[0])
                _copy(src, pg, table, batch, owner, lambda done, t=table.target, n=total: report(t, done, n))
            target = pg.execute(f"SELECT COUNT(*) FROM {table.target}").fetchone()
            counts[table.target] = (total, int(target[0]) if target else 0)
        with pg.transaction():
            for name in ("observations", "namings"):  # identity columns: new rows get ids past the copied ones
                pg.execute(f"SELECT setval(pg_get_serial_sequence('{name}', 'id'), greatest(max(id), 1)) FROM {name}")
            pg.execute(
                "UPDATE counters SET value = greatest(value, (SELECT coalesce(max(cluster_id), 0) FROM observations),"
                " (SELECT coalesce(max(grp), 0) FROM merged_faces)) WHERE name = 'cluster'"
            )
            pg.execute("UPDATE counters SET value = value + 1 WHERE name = 'changes'")
    return counts


def _copy(
    src: sqlite3.Connection, pg: psycopg.Connection[Any], table: _Table, batch: int, owner: str, done: Any
) -> None:
    columns = copied_columns(src, pg, table)
    if table.owned:  # the owner is this replica's, whatever a source column of that name says
        columns = [c for c in columns if c != "owner"]
    targets = [*columns, "owner"] if table.owned else columns
    insert = sql.SQL("INSERT INTO {} ({}) VALUES ({}) ON CONFLICT {} DO NOTHING").format(
        sql.Identifier(table.target),
        sql.SQL(", ").join(map(sql.Identifier, targets)),
        sql.SQL(", ").join(sql.Placeholder() * len(targets)),
        sql.SQL(table.conflict),  # a constant of TABLES
    )
    select = f"SELECT {', '.join(map(_quoted, columns))} FROM {_quoted(table.name)} ORDER BY {table.order}"
    cursor = src.execute(select)
    copied = 0
    while rows := cursor.fetchmany(batch):
        if table.owned:
            rows = [(*r, owner) for r in rows]
        with pg.transaction(), pg.cursor() as cur:
            cur.executemany(insert, rows)
        copied += len(rows)
        done(copied)
