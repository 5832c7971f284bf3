"""The media and photo part of ``facerec gallery migrate``: copy a data dir's events (and webhook outbox),
streams registry, video jobs and photo library (``events.db``, ``streams.db``, ``videos.db``, ``photos.sqlite3``)
into the PostgreSQL tables of :mod:`service.pgstores`.

Ids are kept (photo observation ids, which clusters and cannot-links refer to; event, stream, job and photo ids);
event ``seq`` is renumbered in the same order. Each chunk is one transaction and every row is inserted with
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

from service.pgstores.media import replica_id

ProgressFn = Callable[[str, int, int], None]


@dataclass(frozen=True)
class _Table:
    file: str
    name: str
    target: str
    columns: str
    order: str
    conflict: str


TABLES = (
    _Table(
        "events.db",
        "events",
        "events",
        "id, time, source, track_id, subject_id, name, distance, estimated_fir, first_s, last_s, frames",
        "seq",
        "(id)",
    ),
    _Table("events.db", "outbox", "outbox", "event_id, attempts, next_at, last_error", "rowid", "(event_id)"),
    _Table("streams.db", "streams", "streams", "id, name, url, fps, created_at", "rowid", "(id)"),
    _Table(
        "videos.db",
        "jobs",
        "video_jobs",
        "id, status, filename, path, fps, bytes, created_at, updated_at, progress, duration_s, error, tracks",
        "rowid",
        "(id)",
    ),
    _Table("photos.sqlite3", "photos", "photos", "id, sha256, external_id, created_at", "rowid", "(id)"),
    _Table(
        "photos.sqlite3",
        "observations",
        "observations",
        "id, photo_id, model_id, embedding, box, quality, score, crop, subject_id, distance, cluster_id, face_id, "
        "created_at",
        "id",
        "(id)",
    ),
    _Table("photos.sqlite3", "cannot_link", "cannot_link", "a, b", "a, b", "(a, b)"),
    _Table(
        "photos.sqlite3",
        "namings",
        "namings",
        "id, cluster_id, faces, enrol, subject_id, name, created_at",
        "id",
        "(id)",
    ),
)
"""In dependency order (events before their outbox rows, photos before their observations)."""


def copy_media(
    data_dir: Path, url: str, *, batch: int = 2_000, progress: ProgressFn | None = None
) -> dict[str, tuple[int, int]]:
    """Copy every table of :data:`TABLES` whose file exists in ``data_dir`` into the (migrated) database at
    ``url``; returns ``table -> (rows in the source, rows in the target)``."""
    report = progress or (lambda stage, done, total: None)
    owner = replica_id(data_dir)
    counts: dict[str, tuple[int, int]] = {}
    with psycopg.connect(url) as pg:
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
                "UPDATE counters SET value = greatest(value, (SELECT coalesce(max(cluster_id), 0) FROM observations))"
                " WHERE name = 'cluster'"
            )
            pg.execute("UPDATE counters SET value = value + 1 WHERE name = 'changes'")
    return counts


def _copy(
    src: sqlite3.Connection, pg: psycopg.Connection[Any], table: _Table, batch: int, owner: str, done: Any
) -> None:
    columns, marks = table.columns, ", ".join(["%s"] * len(table.columns.split(",")))
    if table.target == "video_jobs":
        columns, marks = f"{columns}, owner", f"{marks}, %s"
    insert = f"INSERT INTO {table.target} ({columns}) VALUES ({marks}) ON CONFLICT {table.conflict} DO NOTHING"
    cursor = src.execute(f"SELECT {table.columns} FROM {table.name} ORDER BY {table.order}")
    copied = 0
    while rows := cursor.fetchmany(batch):
        if table.target == "video_jobs":
            rows = [(*r, owner) for r in rows]
        with pg.transaction(), pg.cursor() as cur:
            cur.executemany(insert, rows)
        copied += len(rows)
        done(copied)
