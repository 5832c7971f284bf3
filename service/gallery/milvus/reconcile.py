"""Comparing Milvus with PostgreSQL (the truth), reporting and repairing the differences, and rebuilding the index.

- missing: a face PostgreSQL holds with model m whose id is not in m's collection (and not pending in the outbox);
- orphaned: an id in m's collection that PostgreSQL does not hold at all (an erased face whose delete was lost);
- stale model: an id in m's collection whose face PostgreSQL holds with another model (a re-index switch whose
  deletes were lost), and collections of models no face has any more (counted per id).

Repair upserts the missing faces from PostgreSQL and deletes the orphaned and stale ones. Faces pending in the
outbox are left to the drain. Searches never return an orphan or stale vector anyway (hits are checked against
PostgreSQL); reconcile keeps Milvus from growing them and finds faces a search could miss.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import psycopg

from service.gallery.milvus import outbox
from service.gallery.milvus.engine import MilvusEngine
from service.gallery.postgres import locks

log = logging.getLogger("facerec.gallery.milvus")

RECONCILE_LOCK = locks.MILVUS_RECONCILE
"""Advisory lock key: one reconcile at a time across replicas."""


class MilvusGallery(Protocol):
    """What reconcile needs of :class:`service.gallery.milvus.gallery.MilvusGallery` (a Protocol: no import
    cycle with the gallery, whose sync thread reconciles)."""

    engine: MilvusEngine

    def _conn(self) -> AbstractContextManager[psycopg.Connection[Any]]: ...

    def drain(self) -> outbox.DrainResult: ...


Progress = Callable[[int, int], None]
"""``progress(done, total)`` faces."""


@dataclass
class ModelDiff:
    """Differences of one model's collection: face ids missing from Milvus, orphaned and stale-model ids in it."""

    faces: int = 0
    vectors: int = 0
    missing: list[int] = field(default_factory=list)
    orphaned: list[int] = field(default_factory=list)
    stale_model: list[int] = field(default_factory=list)


@dataclass
class ReconcileReport:
    """Per model id: the differences found (and repaired when ``repaired``)."""

    models: dict[str, ModelDiff] = field(default_factory=dict)
    pending: int = 0
    repaired: bool = False

    @property
    def differences(self) -> int:
        return sum(len(d.missing) + len(d.orphaned) + len(d.stale_model) for d in self.models.values())

    def summary(self) -> dict[str, Any]:
        return {
            "differences": self.differences,
            "pending_in_outbox": self.pending,
            "repaired": self.repaired,
            "models": {
                m: {
                    "faces": d.faces,
                    "vectors": d.vectors,
                    "missing": len(d.missing),
                    "orphaned": len(d.orphaned),
                    "stale_model": len(d.stale_model),
                }
                for m, d in sorted(self.models.items())
            },
        }


def _truth(gallery: MilvusGallery) -> tuple[dict[int, str], set[int], set[str]]:
    """Face id -> model id of every face, the face ids pending in the outbox, and every model id that ever had
    vectors in Milvus (its collection's name is derived from it)."""
    with gallery._conn() as conn:
        faces = {int(i): str(m) for i, m in conn.execute("SELECT id, model_id FROM faces")}
        pend = {int(r[0]) for r in conn.execute("SELECT DISTINCT face_id FROM vector_outbox")}
        models = {str(r[0]) for r in conn.execute("SELECT model_id FROM vector_sync")}
    return faces, pend, models | set(faces.values())


def reconcile(gallery: MilvusGallery, *, repair: bool = False) -> ReconcileReport:
    """Compare every collection of this gallery with PostgreSQL; with ``repair``, fix what differs."""
    engine = gallery.engine
    faces, pend, models = _truth(gallery)
    report = ReconcileReport()
    by_model: dict[str, set[int]] = {}
    for fid, m in faces.items():
        by_model.setdefault(m, set()).add(fid)
    known = {engine.name(m): m for m in models}
    collections = {name: known.get(name) or desc or name for name, desc in engine.collections().items()}
    for m in by_model:
        collections.setdefault(engine.name(m), m)
    for name, model in sorted(collections.items()):
        diff = report.models.setdefault(model, ModelDiff())
        want = by_model.get(model, set())
        diff.faces = len(want)
        have: set[int] = set()
        for batch in engine.iter_ids_of(name):
            have.update(batch)
        diff.vectors = len(have)
        diff.missing = sorted(want - have - pend)
        for fid in sorted(have - want - pend):
            (diff.stale_model if fid in faces else diff.orphaned).append(fid)
    report.pending = len(pend)
    if repair and report.differences:
        _repair(gallery, report)
        report.repaired = True
    return report


@contextmanager
def _drain_locked(gallery: MilvusGallery) -> Iterator[psycopg.Connection[Any]]:
    """A connection in a transaction holding the outbox drain lock: no drain applies anything meanwhile."""
    with gallery._conn() as conn, conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (outbox.DRAIN_LOCK,))
        yield conn


def _repair(gallery: MilvusGallery, report: ReconcileReport, *, batch: int = 2000) -> None:
    """Fix the differences found, each batch under the drain lock and checked against PostgreSQL again: a face
    enrolled (and drained) after reconcile read the faces looks orphaned, and must not lose its vector."""
    engine = gallery.engine
    for model, diff in report.models.items():
        drop = diff.orphaned + diff.stale_model
        for start in range(0, len(drop), batch):
            ids = drop[start : start + batch]
            with _drain_locked(gallery) as conn:
                held = {
                    int(i)
                    for i, m in conn.execute("SELECT id, model_id FROM faces WHERE id = ANY(%s)", (ids,))
                    if m == model
                }
                gone = [i for i in ids if i not in held]
                if gone:
                    engine.delete(model, gone)
        for start in range(0, len(diff.missing), batch):
            ids = diff.missing[start : start + batch]
            with _drain_locked(gallery) as conn:
                rows = (
                    conn.cursor(binary=True)
                    .execute(
                        "SELECT id, embedding FROM faces WHERE id = ANY(%s) AND model_id = %s ORDER BY id", (ids, model)
                    )
                    .fetchall()
                )
                if rows:
                    ts = engine.upsert(model, [int(r[0]) for r in rows], np.stack([outbox._vec(r[1]) for r in rows]))
                    _record_ts(conn, model, ts)
    log.info("reconcile repaired %d difference(s)", report.differences)


def _record_ts(conn: psycopg.Connection[Any], model: str, ts: int) -> None:
    if ts:
        conn.execute(
            "INSERT INTO vector_sync AS s (model_id, write_ts) VALUES (%s, %s) "
            "ON CONFLICT (model_id) DO UPDATE SET write_ts = greatest(s.write_ts, excluded.write_ts)",
            (model, ts),
        )


def reconcile_if_free(gallery: MilvusGallery) -> ReconcileReport | None:
    """Reconcile and repair unless another replica is reconciling now (the service's periodic pass)."""
    with gallery._conn() as conn:
        got = conn.execute("SELECT pg_try_advisory_lock(%s)", (RECONCILE_LOCK,)).fetchone()
        if not got or not got[0]:
            return None
        try:
            report = reconcile(gallery, repair=True)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (RECONCILE_LOCK,))
    if report.differences:
        log.warning("periodic reconcile: %s", report.summary())
    return report


def rebuild(gallery: MilvusGallery, *, batch: int = 20_000, progress: Progress | None = None) -> dict[str, int]:
    """Drop this gallery's collections and fill them again from PostgreSQL in id order, ``batch`` faces per
    insert (a fresh collection: plain inserts, no upsert's delete pass; a face a concurrent drain upserts as well
    is held twice until erased, harmless: hits are deduplicated by face id); returns faces per model. While it
    runs, searches can miss faces not re-inserted yet (never return an erased one): run it when the index is lost
    or its index type changes, before sending traffic."""
    engine = gallery.engine
    for name in engine.collections():
        engine.drop_name(name)
    with gallery._conn() as conn:
        total_row = conn.execute("SELECT count(*) FROM faces").fetchone()
    total = int(total_row[0]) if total_row else 0
    done, after = 0, 0
    counts: dict[str, int] = {}
    while True:
        with gallery._conn() as conn:
            rows = (
                conn.cursor(binary=True)
                .execute("SELECT id, model_id, embedding FROM faces WHERE id > %s ORDER BY id LIMIT %s", (after, batch))
                .fetchall()
            )
        if not rows:
            break
        after = int(rows[-1][0])
        per: dict[str, list[Any]] = {}
        for r in rows:
            per.setdefault(str(r[1]), []).append(r)
        for model, rs in per.items():
            ts = engine.insert(model, [int(r[0]) for r in rs], np.stack([outbox._vec(r[2]) for r in rs]))
            with gallery._conn() as conn:
                _record_ts(conn, model, ts)
            counts[model] = counts.get(model, 0) + len(rs)
        done += len(rows)
        if progress is not None:
            progress(done, total)
    gallery.drain()  # writes that raced the rebuild
    return counts
