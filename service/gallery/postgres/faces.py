"""Faces in PostgreSQL: the enrolment write path and the reads of single faces.

Enrolment is one statement (one round trip, one implicit transaction, durable at its commit like any write): it
locks the subjects ``FOR SHARE`` (a concurrent erasure of one waits, then cascades), takes face ids from the
identity sequence, inserts the faces and their crops, and says which models still lack a vector index. If a
subject does not exist nothing is inserted. The count triggers and the HNSW index maintenance run inside it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import psycopg

from service.gallery.errors import FaceNotFound, ModelMismatch, SubjectNotFound
from service.gallery.postgres import subjects
from service.gallery.postgres.rows import FACE_COLS, FACE_FROM, face, to_json
from service.gallery.postgres.vectors import index_name
from service.gallery.types import FaceRecord, NewFace

_ENROL = """
WITH locked AS (
    SELECT pk, id FROM subjects WHERE id = ANY(%(wanted)s::text[]) FOR SHARE
), new AS MATERIALIZED (
    SELECT nextval(pg_get_serial_sequence('faces', 'id')) AS id, l.pk, u.model_id, u.embedding, u.box, u.quality,
           u.sha, u.png, u.i
    FROM (SELECT * FROM unnest(%(sid)s::text[], %(model)s::text[], %(emb)b::vector[], %(box)s::jsonb[],
                               %(quality)s::jsonb[], %(sha)s::text[], %(png)b::bytea[])
          WITH ORDINALITY AS v(sid, model_id, embedding, box, quality, sha, png, i) ORDER BY v.i) u
    JOIN locked l ON l.id = u.sid
    WHERE (SELECT count(*) FROM locked) = cardinality(%(wanted)s::text[])
    ORDER BY u.i
), faces_in AS (
    INSERT INTO faces (id, subject_pk, model_id, embedding, box, quality, image_sha256, created_at)
    SELECT id, pk, model_id, embedding, box, quality, sha, %(now)s FROM new ORDER BY i
), crops_in AS (
    INSERT INTO face_crops (face_id, png) SELECT id, png FROM new WHERE png IS NOT NULL
)
SELECT array(SELECT id FROM locked), array(SELECT id FROM new ORDER BY i),
       array(SELECT m.model FROM unnest(%(models)s::text[], %(indexes)s::text[]) AS m(model, index)
             WHERE to_regclass(m.index) IS NULL)
"""
"""The whole enrolment of a batch of faces (see the module docstring)."""


@dataclass(frozen=True, slots=True)
class Enrolment:
    """One face to insert: its subject, the face, its validated embedding and its PNG crop (or None)."""

    subject_id: str
    face: NewFace
    embedding: npt.NDArray[np.float32]
    png: bytes | None


def enrol(conn: psycopg.Connection[Any], batch: Sequence[Enrolment], now: float) -> tuple[list[int], list[str]]:
    """Insert ``batch`` in one statement; returns the new face ids (in order) and the models of the batch that
    have no vector index yet. :class:`SubjectNotFound` (nothing inserted) if a subject does not exist."""
    wanted = sorted({e.subject_id for e in batch})
    models = sorted({e.face.model_id for e in batch})
    row = conn.execute(
        _ENROL,
        {
            "wanted": wanted,
            "sid": [e.subject_id for e in batch],
            "model": [e.face.model_id for e in batch],
            "emb": [e.embedding for e in batch],
            "box": [to_json(e.face.box) for e in batch],
            "quality": [to_json(e.face.quality) for e in batch],
            "sha": [e.face.image_sha256 for e in batch],
            "png": [e.png for e in batch],
            "now": now,
            "models": models,
            "indexes": [index_name(m) for m in models],
        },
    ).fetchone()
    assert row is not None
    found, ids, unindexed = set(row[0]), [int(i) for i in row[1]], [str(m) for m in row[2]]
    for sid in wanted:
        if sid not in found:
            raise SubjectNotFound(f"no subject with id {sid!r}")
    return ids, unindexed


def of_subject(conn: psycopg.Connection[Any], subject_id: str) -> list[FaceRecord]:
    """The faces of ``subject_id`` in enrolment order; :class:`SubjectNotFound` if there is no such subject."""
    subjects.pk(conn, subject_id)
    rows = conn.execute(f"SELECT {FACE_COLS} {FACE_FROM} WHERE s.id = %s ORDER BY f.id", (subject_id,))
    return [face(r) for r in rows]


def get(conn: psycopg.Connection[Any], face_id: int) -> FaceRecord:
    """The face ``face_id``; :class:`FaceNotFound` if there is none."""
    row = conn.execute(f"SELECT {FACE_COLS} {FACE_FROM} WHERE f.id = %s", (int(face_id),)).fetchone()
    if row is None:
        raise FaceNotFound(f"no face with id {face_id}")
    return face(row)


def delete(conn: psycopg.Connection[Any], face_id: int) -> None:
    """Erase the face ``face_id`` and its crop; :class:`FaceNotFound` if there is none."""
    row = conn.execute("DELETE FROM faces WHERE id = %s RETURNING id", (int(face_id),)).fetchone()
    if row is None:
        raise FaceNotFound(f"no face with id {face_id}")


def by_sha256(conn: psycopg.Connection[Any], sha256: str, subject_id: str | None) -> FaceRecord | None:
    """The first face enrolled from an image with this sha256 (of ``subject_id`` when given), or None."""
    row = conn.execute(
        f"SELECT {FACE_COLS} {FACE_FROM} WHERE f.image_sha256 = %(sha)s "
        "AND (%(sid)s::text IS NULL OR s.id = %(sid)s) ORDER BY f.id LIMIT 1",
        {"sha": sha256, "sid": subject_id},
    ).fetchone()
    return face(row) if row is not None else None


def embeddings(conn: psycopg.Connection[Any], subject_id: str, model_id: str) -> npt.NDArray[np.float32]:
    """The (n, 128) embeddings of ``subject_id``'s faces of ``model_id`` in enrolment order; :class:`ModelMismatch`
    if it has faces but none of that model."""
    pk = subjects.pk(conn, subject_id)
    rows = conn.execute("SELECT model_id, embedding FROM faces WHERE subject_pk = %s ORDER BY id", (pk,))
    pairs = [(str(m), e) for m, e in rows]
    vecs = [np.asarray(e.to_numpy(), np.float32) for m, e in pairs if m == model_id]  # pgvector's Vector
    if not vecs and pairs:
        present = tuple(sorted({m for m, _ in pairs}))
        raise ModelMismatch(
            f"subject {subject_id} has no faces of model {model_id!r}, only of {', '.join(present)}",
            requested=model_id,
            present=present,
        )
    return np.stack(vecs).astype(np.float32) if vecs else np.zeros((0, 128), np.float32)


def embeddings_of_subjects(
    conn: psycopg.Connection[Any], subject_ids: Sequence[str], model_id: str
) -> dict[str, npt.NDArray[np.float32]]:
    """Each listed subject's (n, 128) embeddings of ``model_id`` in enrolment order, in one query; subjects that do
    not exist or have no face of that model are left out."""
    rows = conn.execute(
        "SELECT s.id, f.embedding FROM faces f JOIN subjects s ON s.pk = f.subject_pk "
        "WHERE s.id = ANY(%s) AND f.model_id = %s ORDER BY f.id",
        (list(subject_ids), model_id),
    )
    grouped: dict[str, list[npt.NDArray[np.float32]]] = {}
    for sid, e in rows:
        grouped.setdefault(str(sid), []).append(np.asarray(e.to_numpy(), np.float32))  # pgvector's Vector
    return {sid: np.stack(v).astype(np.float32) for sid, v in grouped.items()}
