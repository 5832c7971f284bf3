"""The outbox that orders writes between PostgreSQL (the truth) and Milvus (its index).

Statement triggers on ``faces`` write one ``vector_outbox`` row ``(face id, model id)`` for every face inserted,
deleted or updated (old and new model), in the same transaction as the change: a face committed to PostgreSQL
always has either its outbox row or its vector in Milvus, whatever crashes when. :func:`drain` applies pending rows
to Milvus from the truth (a face that exists with that model is upserted, otherwise deleted from that model's
collection), then deletes the rows, under one advisory lock so that drains of several replicas never interleave
(an older state can never overwrite a newer one). Applying a row twice is harmless (upsert/delete by id).

``vector_sync`` keeps per model the newest Milvus mutation timestamp any replica applied: searches pass it as
their guarantee timestamp (read-your-writes across replicas, see :mod:`.engine`).

Each row also keeps ``txid``, the id of the transaction that wrote it (version 2): a replica's copy of the pending
faces (:mod:`.pending`) reads only the rows written since its last read instead of the whole outbox.

``vector_compaction`` (version 3) keeps per model when a drain first and last deleted vectors from Milvus that no
compaction has removed from its segments yet (:mod:`.compaction`).

These tables belong to the Milvus engine and are installed by :func:`install` (idempotent, versioned in ``meta``
as ``milvus_outbox_version``) when a Milvus-backed replica starts; the pgvector backend never needs them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import psycopg

from service.gallery.milvus.engine import MilvusEngine
from service.gallery.postgres import locks

log = logging.getLogger("facerec.gallery.milvus")

OUTBOX_VERSION = 3
DRAIN_LOCK = locks.OUTBOX_DRAIN
INSTALL_LOCK = locks.OUTBOX_INSTALL

INSTALL_SQL = """
CREATE TABLE IF NOT EXISTS vector_outbox (
    seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    face_id bigint NOT NULL,
    model_id text NOT NULL,
    created_at double precision NOT NULL DEFAULT extract(epoch FROM clock_timestamp())
);
CREATE INDEX IF NOT EXISTS vector_outbox_face ON vector_outbox (face_id);
ALTER TABLE vector_outbox ADD COLUMN IF NOT EXISTS txid bigint NOT NULL DEFAULT (pg_current_xact_id()::text::bigint);
CREATE INDEX IF NOT EXISTS vector_outbox_model_txid ON vector_outbox (model_id, txid);
CREATE TABLE IF NOT EXISTS vector_sync (model_id text PRIMARY KEY, write_ts bigint NOT NULL);
CREATE TABLE IF NOT EXISTS vector_compaction (
    model_id text PRIMARY KEY,
    first_erased double precision,
    last_erased double precision,
    retry_at double precision NOT NULL DEFAULT 0
);

CREATE OR REPLACE FUNCTION facerec_outbox_new() RETURNS trigger LANGUAGE plpgsql AS $f$
BEGIN
    INSERT INTO vector_outbox (face_id, model_id) SELECT id, model_id FROM new_rows;
    RETURN NULL;
END $f$;
CREATE OR REPLACE FUNCTION facerec_outbox_old() RETURNS trigger LANGUAGE plpgsql AS $f$
BEGIN
    INSERT INTO vector_outbox (face_id, model_id) SELECT id, model_id FROM old_rows;
    RETURN NULL;
END $f$;
CREATE OR REPLACE FUNCTION facerec_outbox_changed() RETURNS trigger LANGUAGE plpgsql AS $f$
BEGIN
    INSERT INTO vector_outbox (face_id, model_id)
    SELECT n.id, n.model_id FROM new_rows n JOIN old_rows o ON o.id = n.id
        WHERE n.model_id IS DISTINCT FROM o.model_id OR n.embedding IS DISTINCT FROM o.embedding
    UNION ALL
    SELECT o.id, o.model_id FROM new_rows n JOIN old_rows o ON o.id = n.id
        WHERE n.model_id IS DISTINCT FROM o.model_id;
    RETURN NULL;
END $f$;
DROP TRIGGER IF EXISTS faces_outbox_insert ON faces;
DROP TRIGGER IF EXISTS faces_outbox_delete ON faces;
DROP TRIGGER IF EXISTS faces_outbox_update ON faces;
CREATE TRIGGER faces_outbox_insert AFTER INSERT ON faces REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION facerec_outbox_new();
CREATE TRIGGER faces_outbox_delete AFTER DELETE ON faces REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION facerec_outbox_old();
CREATE TRIGGER faces_outbox_update AFTER UPDATE ON faces REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION facerec_outbox_changed();
"""


def install(conn: psycopg.Connection[Any]) -> bool:
    """Create the outbox tables and triggers unless this version is installed; True when installed now. Faces
        that exist already (a gallery that was served by pgvector) are queued, so the first drain indexes them; an
        older version's tables are upgraded in place (version 1 -> 2: the ``txid`` column, its rows keep waiting;
    2 -> 3: the ``vector_compaction`` table)."""
    row = conn.execute("SELECT value FROM meta WHERE key = 'milvus_outbox_version'").fetchone()
    if row is not None and int(row[0]) >= OUTBOX_VERSION:
        return False
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (INSTALL_LOCK,))
        row = conn.execute("SELECT value FROM meta WHERE key = 'milvus_outbox_version'").fetchone()
        if row is not None and int(row[0]) >= OUTBOX_VERSION:
            return False
        fresh = row is None
        conn.execute(INSTALL_SQL)
        if fresh:
            conn.execute("INSERT INTO vector_outbox (face_id, model_id) SELECT id, model_id FROM faces ORDER BY id")
        conn.execute(
            "INSERT INTO meta (key, value) VALUES ('milvus_outbox_version', %s) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (str(OUTBOX_VERSION),),
        )
    return True


@dataclass
class DrainResult:
    """What one drain applied: rows consumed, vectors upserted and deleted per model."""

    rows: int = 0
    upserted: dict[str, int] = field(default_factory=dict)
    deleted: dict[str, int] = field(default_factory=dict)


def _vec(value: Any) -> np.ndarray:
    return np.asarray(value.to_numpy() if hasattr(value, "to_numpy") else value, np.float32)


_ERASED = (
    "INSERT INTO vector_compaction AS c (model_id, first_erased, last_erased) "
    "VALUES (%s, extract(epoch FROM clock_timestamp()), extract(epoch FROM clock_timestamp())) "
    "ON CONFLICT (model_id) DO UPDATE SET first_erased = coalesce(c.first_erased, excluded.first_erased), "
    "last_erased = excluded.last_erased"
)
"""A drain deleted vectors of a model from Milvus (seconds since the epoch, PostgreSQL's clock)."""


def drain_once(conn: psycopg.Connection[Any], engine: MilvusEngine, *, limit: int = 2000) -> DrainResult:
    """Apply up to ``limit`` pending outbox rows to Milvus, oldest first, and delete them; all in one transaction
    under the drain lock (another replica's drain waits). Raises VectorIndexUnavailable (rows kept) if Milvus
    fails."""
    out = DrainResult()
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (DRAIN_LOCK,))
        rows = conn.execute(
            "SELECT seq, face_id, model_id FROM vector_outbox ORDER BY seq LIMIT %s", (int(limit),)
        ).fetchall()
        if not rows:
            return out
        touched: dict[str, set[int]] = {}
        for _, fid, model in rows:
            touched.setdefault(str(model), set()).add(int(fid))
        ids = sorted({int(r[1]) for r in rows})
        truth = {
            int(fid): (str(model), emb)
            for fid, model, emb in conn.cursor(binary=True)  # binary: vectors arrive as float32 buffers
            .execute("SELECT id, model_id, embedding FROM faces WHERE id = ANY(%s)", (ids,))
            .fetchall()
        }
        stamps: dict[str, int] = {}
        for model, fids in sorted(touched.items()):
            live = sorted(f for f in fids if f in truth and truth[f][0] == model)
            gone = sorted(f for f in fids if not (f in truth and truth[f][0] == model))
            if live:
                vecs = np.stack([_vec(truth[f][1]) for f in live])
                stamps[model] = max(stamps.get(model, 0), engine.upsert(model, live, vecs))
                out.upserted[model] = len(live)
            if gone:
                stamps[model] = max(stamps.get(model, 0), engine.delete(model, gone))
                out.deleted[model] = len(gone)
                conn.execute(_ERASED, (model,))  # their rows stay in Milvus's segments until a compaction
        conn.execute("DELETE FROM vector_outbox WHERE seq = ANY(%s)", ([int(r[0]) for r in rows],))
        for model, ts in stamps.items():  # every model touched gets a row: reconcile knows its collection
            conn.execute(
                "INSERT INTO vector_sync AS s (model_id, write_ts) VALUES (%s, %s) "
                "ON CONFLICT (model_id) DO UPDATE SET write_ts = greatest(s.write_ts, excluded.write_ts)",
                (model, ts),
            )
        out.rows = len(rows)
    return out


def drain(conn: psycopg.Connection[Any], engine: MilvusEngine, *, limit: int = 2000) -> DrainResult:
    """:func:`drain_once` until the outbox is empty (rows committed before this call are all applied on
    return)."""
    total = DrainResult()
    while True:
        got = drain_once(conn, engine, limit=limit)
        total.rows += got.rows
        for k, n in got.upserted.items():
            total.upserted[k] = total.upserted.get(k, 0) + n
        for k, n in got.deleted.items():
            total.deleted[k] = total.deleted.get(k, 0) + n
        if got.rows < limit:
            return total


def pending(conn: psycopg.Connection[Any]) -> int:
    """Outbox rows not yet applied to Milvus."""
    row = conn.execute("SELECT count(*) FROM vector_outbox").fetchone()
    return int(row[0]) if row else 0


def write_ts(conn: psycopg.Connection[Any], model_id: str) -> int:
    """The newest Milvus mutation timestamp applied for ``model_id`` by any replica (0: none)."""
    row = conn.execute("SELECT write_ts FROM vector_sync WHERE model_id = %s", (model_id,)).fetchone()
    return int(row[0]) if row else 0
