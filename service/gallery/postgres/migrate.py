"""``facerec gallery migrate``: copy an embedded gallery (a data dir: SQLite + FAISS, ``keys.db``, ``audit.log``)
into PostgreSQL, then check that both answer alike.

What is copied: subjects (with their ids), faces with their ids, embeddings, model ids, boxes, quality and
sha256, the stored crops, staged re-index embeddings, the API keys (hashes only: existing tokens keep working)
and the audit log. Face and subject ids are kept, so clients' stored ids stay valid; the sequences are moved
past them.

Resumable: the copy goes in chunks, each in one transaction together with its watermark in ``meta``, so a run
that stops (Ctrl-C, crash, database restart) continues after the last committed chunk. The data dir is locked
for the whole run (a server on it must be stopped first), and a target that already holds another gallery is
refused. At the end, counts are compared and a sample of probes (stored embeddings plus noise) is searched in
both: the same subjects at the same distances, or the report lists each difference.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import psycopg

from service.gallery.errors import GalleryError
from service.gallery.postgres import vectors
from service.gallery.postgres.database import open_database
from service.gallery.postgres.gallery import PostgresGallery
from service.gallery.postgres.vectors import VectorOptions

ProgressFn = Callable[[str, int, int], None]
"""``progress(stage, done, total)``: stage is ``subjects``, ``faces``, ``keys``, ``audit`` or ``verify``."""

SUPPORTED_SQLITE_SCHEMA = 2
DISTANCE_TOLERANCE = 1e-4


class MigrationError(GalleryError):
    """The migration cannot start or continue; the message says why. Nothing already committed is lost."""

    code = "migration_error"


@dataclass
class MigrationReport:
    """What was copied (counts in the target after the run) and how the check went."""

    source: str
    target: str
    resumed: bool = False
    counts: dict[str, tuple[int, int]] = field(default_factory=dict)
    """name -> (source, target) for subjects, faces, faces of each model, crops, staged, keys, audit."""
    probes: int = 0
    differences: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.differences and all(s == t for s, t in self.counts.values())


def _sqlite(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True)


def _chunks(conn: sqlite3.Connection, query: str, after: int, size: int) -> Iterator[list[tuple[Any, ...]]]:
    """Rows of ``query`` (``... WHERE key > ? ORDER BY key LIMIT ?``, key first) after ``after``, by chunks."""
    while True:
        rows = conn.execute(query, (after, size)).fetchall()
        if not rows:
            return
        yield rows
        after = int(rows[-1][0])


def _vec(blob: bytes) -> npt.NDArray[np.float32]:
    return np.frombuffer(blob, dtype="<f4").astype(np.float32)


class _Target:
    """The target database's raw connection for the copy (outside the gallery API: ids are kept)."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.conn = conn

    def meta(self, key: str, default: int = 0) -> int:
        row = self.conn.execute("SELECT value FROM meta WHERE key = %s", (key,)).fetchone()
        return int(row[0]) if row else default

    def set_meta(self, key: str, value: object) -> None:
        self.conn.execute(
            "INSERT INTO meta (key, value) VALUES (%s, %s) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (key, str(value)),
        )

    def copy(self, statement: str, rows: list[tuple[Any, ...]]) -> None:
        with self.conn.cursor().copy(statement) as cp:
            for row in rows:
                cp.write_row(row)


def migrate_gallery(
    data_dir: Path,
    url: str,
    *,
    batch: int = 2_000,
    sample: int = 100,
    progress: ProgressFn | None = None,
    stop_after_batches: int | None = None,
) -> MigrationReport:
    """Copy the embedded gallery in ``data_dir`` into the PostgreSQL database at ``url`` (schema migrated first),
    then compare counts and ``sample`` probes. ``stop_after_batches`` stops after that many face chunks (tests of
    resuming). Raises :class:`MigrationError` / :class:`DatabaseConfigError` for what cannot be done."""
    from service.gallery import GalleryLocked, open_gallery

    data_dir = Path(data_dir)
    db_path = data_dir / "gallery.sqlite3"
    if not db_path.is_file():
        raise MigrationError(f"{data_dir} holds no embedded gallery (no gallery.sqlite3)")
    report_progress = progress or (lambda stage, done, total: None)
    try:
        source = open_gallery(data_dir, auto_maintain=False)  # holds the data dir's lock for the whole run
    except GalleryLocked as e:
        raise MigrationError(f"{e}; stop the server using {data_dir} first") from None
    backend = open_database(url, vectors=VectorOptions(exact_below=2**62))  # exact search for the check
    try:
        with closing(_sqlite(db_path)) as src, backend.pool.connection() as pg:
            version = src.execute("SELECT max(version) FROM schema_version").fetchone()[0]
            if version != SUPPORTED_SQLITE_SCHEMA:
                raise MigrationError(
                    f"{db_path} has schema {version}; this facerec migrates schema {SUPPORTED_SQLITE_SCHEMA}"
                )
            uuid_row = src.execute("SELECT value FROM meta WHERE key = 'gallery_uuid'").fetchone()
            target = _Target(pg)
            report = MigrationReport(str(data_dir), backend.location)
            report.resumed = _claim(target, str(uuid_row[0]) if uuid_row else "")
            _copy_subjects(src, target, batch, report_progress)
            stopped = _copy_faces(src, target, batch, report_progress, stop_after_batches)
            if stopped:
                return report
            _copy_keys(data_dir, target, report_progress)
            _copy_audit(data_dir, target, batch, report_progress)
            with pg.transaction():
                pg.execute("SELECT setval(pg_get_serial_sequence('faces', 'id'), greatest(max(id), 1)) FROM faces")
                pg.execute(
                    "SELECT setval(pg_get_serial_sequence('subjects', 'pk'), greatest(max(pk), 1)) FROM subjects"
                )
            for model_id in vectors.models_with_faces(pg):
                report_progress(f"index {model_id}", 0, 1)
                vectors.ensure_index(pg, model_id, backend.gallery.options)
                report_progress(f"index {model_id}", 1, 1)
            report.counts = _counts(src, pg, data_dir)
        _compare(source, backend.gallery, db_path, sample, report, report_progress)
        return report
    finally:
        backend.close()
        source.close()


def _claim(target: _Target, source_uuid: str) -> bool:
    """Mark the target as migrated from ``source_uuid``; True if an earlier run of the same source started it.
    A target holding anything else is refused."""
    with target.conn.transaction():
        target.conn.execute("LOCK TABLE meta IN EXCLUSIVE MODE")  # one migration at a time
        row = target.conn.execute("SELECT value FROM meta WHERE key = 'migrated_from'").fetchone()
        if row is not None:
            if row[0] != source_uuid:
                raise MigrationError(f"the target database was migrated from another gallery ({row[0]})")
            return True
        held = target.conn.execute(
            "SELECT (SELECT count(*) FROM subjects) + (SELECT count(*) FROM api_keys)"
        ).fetchone()
        if held and held[0]:
            raise MigrationError("the target database already holds a gallery; migrate into an empty database")
        target.set_meta("migrated_from", source_uuid)
    return False


def _copy_subjects(src: sqlite3.Connection, target: _Target, batch: int, progress: ProgressFn) -> None:
    total = src.execute("SELECT count(*) FROM subjects").fetchone()[0]
    after = target.meta("migrate.subjects_upto")
    done = src.execute("SELECT count(*) FROM subjects WHERE pk <= ?", (after,)).fetchone()[0]
    progress("subjects", done, total)
    query = "SELECT pk, id, name, metadata, created_at, updated_at FROM subjects WHERE pk > ? ORDER BY pk LIMIT ?"
    for rows in _chunks(src, query, after, batch):
        with target.conn.transaction():
            target.copy("COPY subjects (pk, id, name, metadata, created_at, updated_at) FROM STDIN", rows)
            target.set_meta("migrate.subjects_upto", rows[-1][0])
        done += len(rows)
        progress("subjects", done, total)


def _copy_faces(
    src: sqlite3.Connection, target: _Target, batch: int, progress: ProgressFn, stop_after: int | None
) -> bool:
    """Faces with their crops and staged embeddings, chunk by chunk; True if stopped early (``stop_after``)."""
    total = src.execute("SELECT count(*) FROM faces").fetchone()[0]
    after = target.meta("migrate.faces_upto")
    done = src.execute("SELECT count(*) FROM faces WHERE id <= ?", (after,)).fetchone()[0]
    progress("faces", done, total)
    query = (
        "SELECT id, subject_pk, model_id, embedding, box, quality, image_sha256, created_at "
        "FROM faces WHERE id > ? ORDER BY id LIMIT ?"
    )
    for n, rows in enumerate(_chunks(src, query, after, batch)):
        if stop_after is not None and n >= stop_after:
            return True
        lo, hi = int(rows[0][0]), int(rows[-1][0])
        crops = src.execute("SELECT face_id, png FROM face_crops WHERE face_id BETWEEN ? AND ?", (lo, hi)).fetchall()
        staged = src.execute(
            "SELECT face_id, model_id, embedding, created_at FROM face_embeddings WHERE face_id BETWEEN ? AND ?",
            (lo, hi),
        ).fetchall()
        with target.conn.transaction():
            target.copy(
                "COPY faces (id, subject_pk, model_id, embedding, box, quality, image_sha256, created_at) FROM STDIN",
                [(r[0], r[1], r[2], _vec(r[3]), r[4], r[5], r[6], r[7]) for r in rows],
            )
            target.copy("COPY face_crops (face_id, png) FROM STDIN", [(f, bytes(p)) for f, p in crops])
            target.copy(
                "COPY face_embeddings (face_id, model_id, embedding, created_at) FROM STDIN",
                [(f, m, _vec(e), t) for f, m, e, t in staged],
            )
            target.set_meta("migrate.faces_upto", hi)
        done += len(rows)
        progress("faces", done, total)
    return False


_KEY_TIMES = ("expires_at", "last_used_at")
"""The columns ``keys.db`` schema version 2 added, copied as they are."""


def _copy_keys(data_dir: Path, target: _Target, progress: ProgressFn) -> None:
    path = data_dir / "keys.db"
    rows: list[tuple[Any, ...]] = []
    if path.is_file():
        with closing(_sqlite(path)) as keys:
            have = {str(r[1]) for r in keys.execute("PRAGMA table_info(api_keys)")}
            # a keys.db no server of version 2 opened yet has no expiry or last use: NULL, as the upgrade makes
            extra = ", ".join(c if c in have else f"NULL AS {c}" for c in _KEY_TIMES)
            rows = keys.execute(
                f"SELECT id, name, scope, token_sha256, created_at, revoked_at, {extra} FROM api_keys ORDER BY rowid"
            ).fetchall()
    with target.conn.transaction(), target.conn.cursor() as cur:
        if rows:
            cur.executemany(
                "INSERT INTO api_keys (id, name, scope, token_sha256, created_at, revoked_at, "
                f"{', '.join(_KEY_TIMES)}) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (id) DO NOTHING",
                rows,
            )
    progress("keys", len(rows), len(rows))


def _audit_entries(data_dir: Path) -> list[str]:
    """The audit log's records as JSON text, unreadable lines left out (as ``facerec audit tail`` does)."""
    path = data_dir / "audit.log"
    if not path.is_file():
        return []
    out = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            json.loads(line)
        except json.JSONDecodeError:
            continue
        out.append(line)
    return out


def _copy_audit(data_dir: Path, target: _Target, batch: int, progress: ProgressFn) -> None:
    entries = _audit_entries(data_dir)
    done = target.meta("migrate.audit_lines")
    progress("audit", done, len(entries))
    while done < len(entries):
        part = entries[done : done + batch]
        with target.conn.transaction():
            target.copy("COPY audit_log (entry) FROM STDIN", [(e,) for e in part])
            target.set_meta("migrate.audit_lines", done + len(part))
        done += len(part)
        progress("audit", done, len(entries))


def _counts(src: sqlite3.Connection, pg: psycopg.Connection[Any], data_dir: Path) -> dict[str, tuple[int, int]]:
    def both(name: str, sqlite_q: str, pg_q: str) -> tuple[str, tuple[int, int]]:
        s = src.execute(sqlite_q).fetchone()
        t = pg.execute(pg_q).fetchone()
        return name, (int(s[0]), int(t[0]) if t else 0)

    out = dict(
        [
            both("subjects", "SELECT count(*) FROM subjects", "SELECT count(*) FROM subjects"),
            both("faces", "SELECT count(*) FROM faces", "SELECT count(*) FROM faces"),
            both("crops", "SELECT count(*) FROM face_crops", "SELECT count(*) FROM face_crops"),
            both("staged", "SELECT count(*) FROM face_embeddings", "SELECT count(*) FROM face_embeddings"),
        ]
    )
    src_models = dict(src.execute("SELECT model_id, count(*) FROM faces GROUP BY model_id").fetchall())
    pg_models = vectors.models_with_faces(pg)
    for model in sorted(set(src_models) | set(pg_models)):
        out[f"faces of {model}"] = (int(src_models.get(model, 0)), int(pg_models.get(model, 0)))
    key_rows = 0
    if (data_dir / "keys.db").is_file():
        with closing(_sqlite(data_dir / "keys.db")) as keys:
            key_rows = int(keys.execute("SELECT count(*) FROM api_keys").fetchone()[0])
    pg_keys = pg.execute("SELECT count(*) FROM api_keys").fetchone()
    out["keys"] = (key_rows, int(pg_keys[0]) if pg_keys else 0)
    pg_audit = pg.execute("SELECT count(*) FROM audit_log").fetchone()
    out["audit"] = (len(_audit_entries(data_dir)), int(pg_audit[0]) if pg_audit else 0)
    return out


def _compare(
    source: Any, target: PostgresGallery, db_path: Path, sample: int, report: MigrationReport, progress: ProgressFn
) -> None:
    """Search ``sample`` noisy copies of stored embeddings in both galleries; record every difference (subjects
    or distances beyond :data:`DISTANCE_TOLERANCE`; ties may come in either order)."""
    with closing(_sqlite(db_path)) as src:
        rows = src.execute(
            "SELECT model_id, embedding FROM faces ORDER BY (id * 2654435761) % 4294967296 LIMIT ?", (sample,)
        ).fetchall()
    rng = np.random.default_rng(0)
    report.probes = len(rows)
    for i, (model_id, blob) in enumerate(rows):
        v = _vec(blob) + rng.standard_normal(128).astype(np.float32) * 0.04
        probe = (v / np.linalg.norm(v)).astype(np.float32)
        want = source.search(probe, model_id=model_id, top_k=5)[0]
        got = target.search(probe, model_id=model_id, top_k=5)[0]
        wd = [round(c.distance, 4) for c in want]
        gd = [round(c.distance, 4) for c in got]
        same_distances = len(wd) == len(gd) and all(
            abs(a.distance - b.distance) <= DISTANCE_TOLERANCE for a, b in zip(want, got, strict=True)
        )
        same_subjects = {c.subject_id for c in want} == {c.subject_id for c in got}
        if not (same_distances and (same_subjects or _ties_only(want, got))):
            report.differences.append(
                f"probe {i} ({model_id}): embedded {[c.subject_id[:8] for c in want]} {wd}, "
                f"postgres {[c.subject_id[:8] for c in got]} {gd}"
            )
        progress("verify", i + 1, len(rows))


def _ties_only(want: list[Any], got: list[Any]) -> bool:
    """The lists differ only in which of equally distant subjects made the cut at the end."""
    last = want[-1].distance if want else 0.0
    strict_w = {c.subject_id for c in want if c.distance < last - DISTANCE_TOLERANCE}
    strict_g = {c.subject_id for c in got if c.distance < last - DISTANCE_TOLERANCE}
    return strict_w == strict_g
