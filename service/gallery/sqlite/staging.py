"""Re-index staging (``face_embeddings``) and the model switch. Each takes the connection to run on.

A face keeps its serving embedding in ``faces``; a re-index to model ``X`` first stages an embedding of ``X``
per face in ``face_embeddings`` (searches never read it; rows cascade away with their face), then switches every
face to ``X`` in one transaction.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence

from service.gallery.validation import require_staged


def reindex_counts(conn: sqlite3.Connection, model_id: str) -> dict[str, int]:
    """For a re-index to ``model_id``: ``faces`` (all), ``todo`` (faces of another model), ``staged`` (of those,
    with an embedding of ``model_id`` already in ``face_embeddings``) and ``without_crop`` (of those, with no
    stored crop and no staged embedding: they cannot be re-embedded)."""
    row = conn.execute(
        "SELECT count(*), "
        "  coalesce(sum(f.model_id != :m), 0), "
        "  coalesce(sum(f.model_id != :m AND e.face_id IS NOT NULL), 0), "
        "  coalesce(sum(f.model_id != :m AND e.face_id IS NULL AND c.face_id IS NULL), 0) "
        "FROM faces f "
        "LEFT JOIN face_embeddings e ON e.face_id = f.id AND e.model_id = :m "
        "LEFT JOIN face_crops c ON c.face_id = f.id",
        {"m": model_id},
    ).fetchone()
    return {"faces": int(row[0]), "todo": int(row[1]), "staged": int(row[2]), "without_crop": int(row[3])}


def crops_to_embed(conn: sqlite3.Connection, model_id: str, after_id: int, limit: int) -> list[tuple[int, bytes]]:
    """Up to ``limit`` ``(face id, crop PNG)`` of faces with ``id > after_id`` not of ``model_id`` and with no
    staged embedding of ``model_id``, in id order."""
    rows = conn.execute(
        "SELECT f.id, c.png FROM faces f JOIN face_crops c ON c.face_id = f.id "
        "WHERE f.id > ? AND f.model_id != ? AND NOT EXISTS "
        "(SELECT 1 FROM face_embeddings e WHERE e.face_id = f.id AND e.model_id = ?) "
        "ORDER BY f.id LIMIT ?",
        (after_id, model_id, model_id, limit),
    )
    return [(int(r[0]), bytes(r[1])) for r in rows]


def stage(conn: sqlite3.Connection, model_id: str, face_ids: Sequence[int], blobs: Sequence[bytes]) -> int:
    """Store embeddings of ``model_id`` for existing faces; a face erased meanwhile is skipped (its row would
    only be cascaded away). Returns the rows written."""
    now = time.time()
    cur = conn.cursor()
    written = 0
    for fid, blob in zip(face_ids, blobs, strict=True):
        cur.execute(
            "INSERT OR REPLACE INTO face_embeddings (face_id, model_id, embedding, created_at) "
            "SELECT ?, ?, ?, ? WHERE EXISTS (SELECT 1 FROM faces WHERE id = ?)",
            (fid, model_id, blob, now, fid),
        )
        written += cur.rowcount
    return written


def switch(conn: sqlite3.Connection, model_id: str) -> list[tuple[int, str]]:
    """Give every face of another model its staged embedding of ``model_id`` (``faces.model_id`` and
    ``faces.embedding`` rewritten), log each old (face, model) in ``deletions`` (so the old model's index snapshot
    replays them as erased) and drop the staged rows. :class:`ReindexIncomplete` (the caller rolls back) if a
    face has no staged embedding. Returns the (face id, old model) pairs."""
    require_staged(reindex_counts(conn, model_id), model_id)
    old = [
        (int(r[0]), str(r[1]))
        for r in conn.execute("SELECT id, model_id FROM faces WHERE model_id != ? ORDER BY id", (model_id,))
    ]
    now = time.time()
    conn.executemany(
        "INSERT INTO deletions (face_id, model_id, deleted_at) VALUES (?, ?, ?)", [(fid, mid, now) for fid, mid in old]
    )
    conn.execute(
        "UPDATE faces SET model_id = :m, embedding = "
        "(SELECT e.embedding FROM face_embeddings e WHERE e.face_id = faces.id AND e.model_id = :m) "
        "WHERE model_id != :m",
        {"m": model_id},
    )
    conn.execute("DELETE FROM face_embeddings WHERE model_id = ?", (model_id,))
    return old
