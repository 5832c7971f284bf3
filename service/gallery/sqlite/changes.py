"""What the in-memory index cache reads of the truth: embeddings by model in id order, the deletions log and
the watermarks a snapshot records (``max face id``, ``max deletion seq``: both only grow)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator

import numpy as np
import numpy.typing as npt

from service.gallery.sqlite.faces import vectors
from service.gallery.sqlite.schema import meta_set

PRUNED_KEY = "pruned_deletions_upto"
"""``meta`` key: deletions up to this seq were dropped from the log (every snapshot holds them)."""


def iter_embeddings(
    conn: sqlite3.Connection, model_id: str, after_id: int, chunk: int
) -> Iterator[tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]]:
    """``(face ids, embeddings)`` of ``model_id`` with ``id > after_id``, in id order, by chunks."""
    last = after_id
    while True:
        rows = conn.execute(
            "SELECT id, embedding FROM faces WHERE model_id = ? AND id > ? ORDER BY id LIMIT ?",
            (model_id, last, chunk),
        ).fetchall()
        if not rows:
            return
        ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        yield ids, vectors([r[1] for r in rows])
        last = int(ids[-1])


def deletions_after(conn: sqlite3.Connection, model_id: str, seq: int) -> npt.NDArray[np.int64]:
    """Face ids of ``model_id`` erased (or switched away) after deletion ``seq``, in log order."""
    rows = conn.execute("SELECT face_id FROM deletions WHERE model_id = ? AND seq > ? ORDER BY seq", (model_id, seq))
    return np.fromiter((r[0] for r in rows), dtype=np.int64)


def prune_deletions(conn: sqlite3.Connection, upto_seq: int) -> None:
    """Forget deletions every snapshot already contains (the seq counter itself keeps increasing)."""
    conn.execute("DELETE FROM deletions WHERE seq <= ?", (upto_seq,))
    meta_set(conn, PRUNED_KEY, str(upto_seq))


def watermarks(conn: sqlite3.Connection) -> tuple[int, int]:
    """``(max face id ever assigned, max deletion seq ever assigned)``; both only grow."""
    rows = dict(conn.execute("SELECT name, seq FROM sqlite_sequence WHERE name IN ('faces', 'deletions')").fetchall())
    return int(rows.get("faces", 0)), int(rows.get("deletions", 0))


def face_subject_pairs(conn: sqlite3.Connection) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """All ``(face id, subject pk)`` pairs, as two arrays."""
    rows = conn.execute("SELECT id, subject_pk FROM faces").fetchall()
    if not rows:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    arr = np.array(rows, dtype=np.int64)
    return arr[:, 0], arr[:, 1]
