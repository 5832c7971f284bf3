"""Queries on the ``faces`` and ``face_crops`` tables. Each takes the connection to run on (the caller's
transaction for writes). Embeddings are 128 little-endian float32 (512-byte blobs)."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from embeddings.types import EMBEDDING_DIM
from service.gallery.errors import FaceNotFound
from service.gallery.sqlite.subjects import subject_pk
from service.gallery.types import FaceRecord, NewFace

_COLS = "f.id, s.id, f.model_id, f.box, f.quality, f.image_sha256, f.created_at"
_FROM = "FROM faces f JOIN subjects s ON s.pk = f.subject_pk"

FaceRow = tuple[str, NewFace, bytes, bytes | None]
"""A face to insert: ``(subject id, face, embedding blob, crop PNG or None)``."""


def _face(row: Sequence[Any]) -> FaceRecord:
    return FaceRecord(
        id=row[0],
        subject_id=row[1],
        model_id=row[2],
        box=json.loads(row[3]) if row[3] is not None else None,
        quality=json.loads(row[4]) if row[4] is not None else None,
        image_sha256=row[5],
        created_at=row[6],
    )


def vectors(blobs: Sequence[bytes]) -> npt.NDArray[np.float32]:
    """(n, 128) float32 from embedding blobs."""
    if not blobs:
        return np.zeros((0, EMBEDDING_DIM), np.float32)
    return np.frombuffer(b"".join(blobs), dtype="<f4").reshape(len(blobs), EMBEDDING_DIM).astype(np.float32)


def insert(
    conn: sqlite3.Connection, subject_ids: Sequence[str], rows: Sequence[FaceRow]
) -> tuple[list[FaceRecord], dict[str, int]]:
    """Insert faces (a crop goes to ``face_crops`` with its face); returns their records in the order given and
    the pks of ``subject_ids`` (every subject the rows name). :class:`SubjectNotFound` if one does not exist."""
    pks = {sid: subject_pk(conn, sid) for sid in subject_ids}
    now = time.time()
    out: list[FaceRecord] = []
    cur = conn.cursor()
    for sid, face, blob, crop_png in rows:
        cur.execute(
            "INSERT INTO faces (subject_pk, model_id, embedding, box, quality, image_sha256, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                pks[sid],
                face.model_id,
                blob,
                json.dumps(face.box) if face.box is not None else None,
                json.dumps(face.quality) if face.quality is not None else None,
                face.image_sha256,
                now,
            ),
        )
        fid = cur.lastrowid
        assert fid is not None
        if crop_png is not None:
            cur.execute("INSERT INTO face_crops (face_id, png) VALUES (?, ?)", (fid, crop_png))
        out.append(FaceRecord(fid, sid, face.model_id, face.box, face.quality, face.image_sha256, now))
    return out, pks


def delete(conn: sqlite3.Connection, face_id: int) -> str:
    """Erase one face (logging it in ``deletions``); returns its model id."""
    row = conn.execute("SELECT model_id FROM faces WHERE id = ?", (face_id,)).fetchone()
    if row is None:
        raise FaceNotFound(f"no face with id {face_id}")
    conn.execute(
        "INSERT INTO deletions (face_id, model_id, deleted_at) VALUES (?, ?, ?)", (face_id, row[0], time.time())
    )
    conn.execute("DELETE FROM faces WHERE id = ?", (face_id,))
    return str(row[0])


def get(conn: sqlite3.Connection, face_id: int) -> FaceRecord:
    row = conn.execute(f"SELECT {_COLS} {_FROM} WHERE f.id = ?", (face_id,)).fetchone()
    if row is None:
        raise FaceNotFound(f"no face with id {face_id}")
    return _face(row)


def of_subject(conn: sqlite3.Connection, subject_id: str) -> list[FaceRecord]:
    """The subject's faces, oldest first; :class:`SubjectNotFound` if it does not exist."""
    pk = subject_pk(conn, subject_id)
    return [_face(r) for r in conn.execute(f"SELECT {_COLS} {_FROM} WHERE f.subject_pk = ? ORDER BY f.id", (pk,))]


def by_sha256(conn: sqlite3.Connection, sha256: str, subject_id: str | None) -> FaceRecord | None:
    sql = f"SELECT {_COLS} {_FROM} WHERE f.image_sha256 = ?"
    args: list[Any] = [sha256]
    if subject_id is not None:
        sql += " AND s.id = ?"
        args.append(subject_id)
    row = conn.execute(sql + " ORDER BY f.id LIMIT 1", args).fetchone()
    return _face(row) if row is not None else None


def subject_embeddings(
    conn: sqlite3.Connection, subject_id: str, model_id: str
) -> tuple[npt.NDArray[np.float32], list[str]]:
    """The subject's embeddings of ``model_id`` (n, 128) and the models of all its faces."""
    pk = subject_pk(conn, subject_id)
    models: list[str] = []
    blobs: list[bytes] = []
    for mid, blob in conn.execute("SELECT model_id, embedding FROM faces WHERE subject_pk = ? ORDER BY id", (pk,)):
        models.append(mid)
        if mid == model_id:
            blobs.append(blob)
    return vectors(blobs), models


def embedding_blobs(conn: sqlite3.Connection, face_ids: Sequence[int], model_id: str | None) -> dict[int, bytes]:
    """The current embeddings of those of these faces that exist (and are of ``model_id`` if given), by face
    id; a face erased meanwhile is simply absent."""
    blobs: dict[int, bytes] = {}
    ids = [int(f) for f in face_ids]
    of_model = "" if model_id is None else " AND model_id = ?"
    for start in range(0, len(ids), 900):
        part = ids[start : start + 900]
        marks = ",".join("?" * len(part))
        args = part if model_id is None else [*part, model_id]
        for fid, blob in conn.execute(f"SELECT id, embedding FROM faces WHERE id IN ({marks}){of_model}", args):
            blobs[int(fid)] = blob
    return blobs


def crop_png(conn: sqlite3.Connection, face_id: int) -> bytes | None:
    row = conn.execute("SELECT png FROM face_crops WHERE face_id = ?", (face_id,)).fetchone()
    return bytes(row[0]) if row is not None else None


def by_model(conn: sqlite3.Connection) -> dict[str, int]:
    """Faces per model id."""
    return {str(m): int(n) for m, n in conn.execute("SELECT model_id, count(*) FROM faces GROUP BY model_id")}


def count(conn: sqlite3.Connection, model_id: str) -> int:
    return int(conn.execute("SELECT count(*) FROM faces WHERE model_id = ?", (model_id,)).fetchone()[0])


def ids_of_model(conn: sqlite3.Connection, model_id: str) -> npt.NDArray[np.int64]:
    rows = conn.execute("SELECT id FROM faces WHERE model_id = ? ORDER BY id", (model_id,))
    return np.fromiter((r[0] for r in rows), dtype=np.int64)
