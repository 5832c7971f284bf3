"""Re-indexing in PostgreSQL: the crops still to embed with a new model, the staged embeddings
(``face_embeddings``) and the switch that makes them every face's embedding in one transaction."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import psycopg

from service.gallery.validation import require_staged


def counts(conn: psycopg.Connection[Any], model_id: str) -> dict[str, int]:
    """For a re-index to ``model_id``: ``faces`` (all), ``todo`` (of another model), ``staged`` (of those, with an
    embedding of ``model_id`` staged) and ``without_crop`` (of those, neither crop nor staged embedding)."""
    row = conn.execute(
        "SELECT count(*), "
        "  count(*) FILTER (WHERE f.model_id <> %(m)s), "
        "  count(*) FILTER (WHERE f.model_id <> %(m)s AND e.face_id IS NOT NULL), "
        "  count(*) FILTER (WHERE f.model_id <> %(m)s AND e.face_id IS NULL AND c.face_id IS NULL) "
        "FROM faces f "
        "LEFT JOIN face_embeddings e ON e.face_id = f.id AND e.model_id = %(m)s "
        "LEFT JOIN face_crops c ON c.face_id = f.id",
        {"m": model_id},
    ).fetchone()
    assert row is not None
    return {"faces": int(row[0]), "todo": int(row[1]), "staged": int(row[2]), "without_crop": int(row[3])}


def crops_to_embed(conn: psycopg.Connection[Any], model_id: str, after_id: int, limit: int) -> list[tuple[int, bytes]]:
    """Up to ``limit`` ``(face id, PNG crop)`` with id above ``after_id``, of faces of another model that have no
    staged embedding of ``model_id`` yet, in id order."""
    rows = conn.execute(
        "SELECT f.id, c.png FROM faces f JOIN face_crops c ON c.face_id = f.id "
        "WHERE f.id > %(after)s AND f.model_id <> %(m)s AND NOT EXISTS "
        "(SELECT 1 FROM face_embeddings e WHERE e.face_id = f.id AND e.model_id = %(m)s) "
        "ORDER BY f.id LIMIT %(n)s",
        {"after": int(after_id), "m": model_id, "n": int(limit)},
    ).fetchall()
    return [(int(r[0]), bytes(r[1])) for r in rows]


def stage(conn: psycopg.Connection[Any], model_id: str, face_ids: Sequence[int], vecs: npt.NDArray[np.float32]) -> int:
    """Stage (or replace) the embeddings of ``model_id`` of faces that still exist, in one statement; returns
    how many were written."""
    cur = conn.execute(
        "INSERT INTO face_embeddings (face_id, model_id, embedding, created_at) "
        "SELECT u.fid, %s, u.v, %s FROM unnest(%s::bigint[], %s::vector[]) AS u(fid, v) "
        "WHERE EXISTS (SELECT 1 FROM faces f WHERE f.id = u.fid) "
        "ON CONFLICT (face_id, model_id) DO UPDATE "
        "SET embedding = excluded.embedding, created_at = excluded.created_at",
        (model_id, time.time(), [int(f) for f in face_ids], list(vecs)),
    )
    return max(cur.rowcount, 0)


def switch(conn: psycopg.Connection[Any], model_id: str) -> int:
    """Make ``model_id`` every face's model from the staged embeddings, in one transaction that blocks writes to
    ``faces`` (not reads); :class:`ReindexIncomplete` (nothing changed) if a face has none. Returns how many
    faces were switched."""
    with conn.transaction():
        conn.execute("LOCK TABLE faces IN SHARE ROW EXCLUSIVE MODE")
        require_staged(counts(conn, model_id), model_id)
        cur = conn.execute(
            "UPDATE faces f SET model_id = e.model_id, embedding = e.embedding FROM face_embeddings e "
            "WHERE e.face_id = f.id AND e.model_id = %(m)s AND f.model_id <> %(m)s",
            {"m": model_id},
        )
        switched = max(cur.rowcount, 0)
        conn.execute("DELETE FROM face_embeddings WHERE model_id = %s", (model_id,))
    return switched
