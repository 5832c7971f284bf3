"""``PostgresGallery``: the gallery in PostgreSQL (truth) with pgvector (search); implements
:class:`service.gallery.base.Gallery`.

Stateless: every call reads the database, nothing is cached in the process, so any number of replicas can serve
one database. A write returns after its transaction committed (PostgreSQL's ``synchronous_commit``: durable),
and every statement after that, on any replica, sees it (READ COMMITTED takes a new snapshot per statement): a
face enrolled through one replica is found by the next search on another, and a face or subject deleted is
never returned again. A database failure (server down, connection lost, disk full) raises
:class:`StorageUnavailable` / :class:`StorageFull` with nothing changed; the pool reconnects by itself.

Conventions: embeddings are float32 (128,) unit vectors; distances are L2 in [0, 2]; similarity is
``1 - d**2 / 2``; times are Unix seconds.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import numpy.typing as npt
import psycopg
from psycopg_pool import ConnectionPool

from service.gallery.crops import encode_crop
from service.gallery.cursor import decode_cursor, encode_cursor
from service.gallery.errors import (
    FaceNotFound,
    InvalidEmbedding,
    ModelMismatch,
    ReindexIncomplete,
    SubjectNotFound,
)
from service.gallery.postgres import vectors
from service.gallery.postgres.errors import db_errors
from service.gallery.postgres.vectors import VectorOptions
from service.gallery.types import Candidate, FaceRecord, GalleryStats, IndexInfo, NewFace, Subject
from service.gallery.validation import new_face_vectors, unit_vectors

_SUBJECT_COLS = (
    "s.pk, s.id, s.name, s.metadata, s.created_at, s.updated_at, "
    "(SELECT count(*) FROM faces f WHERE f.subject_pk = s.pk)"
)
_FACE_COLS = "f.id, s.id, f.model_id, f.box, f.quality, f.image_sha256, f.created_at"
_FACE_FROM = "FROM faces f JOIN subjects s ON s.pk = f.subject_pk"


def _subject(row: Sequence[Any]) -> Subject:
    return Subject(id=row[1], name=row[2], metadata=row[3], created_at=row[4], updated_at=row[5], face_count=row[6])


def _face(row: Sequence[Any]) -> FaceRecord:
    return FaceRecord(
        id=int(row[0]),
        subject_id=row[1],
        model_id=row[2],
        box=row[3],
        quality=row[4],
        image_sha256=row[5],
        created_at=row[6],
    )


def _json(value: dict[str, Any] | None) -> str | None:
    return json.dumps(value) if value is not None else None


class PostgresGallery:
    """The gallery of one PostgreSQL database, over a connection pool (see :mod:`.backend` to open one)."""

    def __init__(self, pool: ConnectionPool[psycopg.Connection[Any]], *, options: VectorOptions | None = None) -> None:
        self._pool = pool
        self.options = options or VectorOptions()
        with self._conn() as conn:
            row = conn.execute("SELECT value FROM meta WHERE key = 'gallery_uuid'").fetchone()
        self.gallery_uuid = str(row[0]) if row else ""

    def _ensure_vector_index(self, conn: psycopg.Connection[Any], model_id: str) -> None:
        """Make the vector index of ``model_id`` exist before faces of it are written (the seam a vector engine
        outside PostgreSQL overrides: Milvus makes its collections itself)."""
        vectors.ensure_index(conn, model_id, self.options)

    @contextmanager
    def _conn(self) -> Iterator[psycopg.Connection[Any]]:
        """A pooled autocommit connection; database failures become StorageUnavailable / StorageFull."""
        with db_errors(), self._pool.connection() as conn:
            yield conn

    # ================================================================== subjects
    def create_subject(self, *, name: str, metadata: dict[str, Any] | None = None) -> Subject:
        return self.create_subjects([(name, metadata)])[0]

    def create_subjects(self, items: Sequence[tuple[str, dict[str, Any] | None]]) -> list[Subject]:
        now = time.time()
        out = [Subject(uuid.uuid4().hex, name, dict(meta or {}), now, now, 0) for name, meta in items]
        if not out:
            return []
        with self._conn() as conn, conn.transaction(), conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO subjects (id, name, metadata, created_at, updated_at) VALUES (%s, %s, %s, %s, %s)",
                [(s.id, s.name, json.dumps(s.metadata), now, now) for s in out],
            )
        return out

    def get_subject(self, subject_id: str) -> Subject:
        with self._conn() as conn:
            return self._get_subject(conn, subject_id)

    @staticmethod
    def _get_subject(conn: psycopg.Connection[Any], subject_id: str) -> Subject:
        row = conn.execute(f"SELECT {_SUBJECT_COLS} FROM subjects s WHERE s.id = %s", (subject_id,)).fetchone()
        if row is None:
            raise SubjectNotFound(f"no subject with id {subject_id!r}")
        return _subject(row)

    def list_subjects(self, *, limit: int = 50, cursor: str | None = None) -> tuple[list[Subject], str | None]:
        if limit < 1:
            raise ValueError("limit must be >= 1")
        after = decode_cursor(cursor) if cursor else 0
        with self._conn() as conn:
            rows = conn.execute(
                f"SELECT {_SUBJECT_COLS} FROM subjects s WHERE s.pk > %s ORDER BY s.pk LIMIT %s", (after, limit + 1)
            ).fetchall()
        more = len(rows) > limit
        rows = rows[:limit]
        return [_subject(r) for r in rows], (encode_cursor(int(rows[-1][0])) if more and rows else None)

    def update_subject(
        self, subject_id: str, *, name: str | None = None, metadata: dict[str, Any] | None = None
    ) -> Subject:
        with self._conn() as conn, conn.transaction():
            row = conn.execute(
                "UPDATE subjects SET name = coalesce(%s, name), metadata = coalesce(%s::jsonb, metadata), "
                "updated_at = CASE WHEN %s OR %s THEN %s ELSE updated_at END WHERE id = %s RETURNING pk",
                (name, _json(metadata), name is not None, metadata is not None, time.time(), subject_id),
            ).fetchone()
            if row is None:
                raise SubjectNotFound(f"no subject with id {subject_id!r}")
            return self._get_subject(conn, subject_id)

    def delete_subject(self, subject_id: str) -> int:
        with self._conn() as conn, conn.transaction():
            row = conn.execute("SELECT pk FROM subjects WHERE id = %s FOR UPDATE", (subject_id,)).fetchone()
            if row is None:
                raise SubjectNotFound(f"no subject with id {subject_id!r}")
            count = conn.execute("SELECT count(*) FROM faces WHERE subject_pk = %s", (row[0],)).fetchone()
            conn.execute("DELETE FROM subjects WHERE pk = %s", (row[0],))  # faces and crops cascade
        return int(count[0]) if count else 0

    # ================================================================== faces
    def add_faces(self, subject_id: str, faces: Sequence[NewFace]) -> list[FaceRecord]:
        return self.add_faces_many({subject_id: faces})

    def add_faces_many(self, batch: Mapping[str, Sequence[NewFace]]) -> list[FaceRecord]:
        prepared: list[tuple[str, NewFace, npt.NDArray[np.float32], bytes | None]] = []
        for sid, faces in batch.items():
            if not faces:
                continue
            vecs = new_face_vectors(faces)
            for f, v in zip(faces, vecs, strict=True):
                prepared.append((sid, f, v, encode_crop(f.crop) if f.crop is not None else None))
        if not prepared:
            return []
        now = time.time()
        with self._conn() as conn:
            for model_id in sorted({f.model_id for _, f, _, _ in prepared}):
                self._ensure_vector_index(conn, model_id)
            with conn.transaction(), conn.cursor() as cur:
                # FOR SHARE: a concurrent delete of these subjects waits for this transaction (then cascades)
                wanted = sorted({sid for sid, _, _, _ in prepared})
                pks = dict(
                    cur.execute("SELECT id, pk FROM subjects WHERE id = ANY(%s) FOR SHARE", (wanted,)).fetchall()
                )
                for sid in wanted:
                    if sid not in pks:
                        raise SubjectNotFound(f"no subject with id {sid!r}")
                cur.executemany(
                    "INSERT INTO faces (subject_pk, model_id, embedding, box, quality, image_sha256, created_at) "
                    "VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING id",
                    [
                        (pks[sid], f.model_id, v, _json(f.box), _json(f.quality), f.image_sha256, now)
                        for sid, f, v, _ in prepared
                    ],
                    returning=True,
                )
                ids: list[int] = []
                while True:
                    got = cur.fetchone()
                    assert got is not None
                    ids.append(int(got[0]))
                    if not cur.nextset():
                        break
                crops = [(fid, png) for fid, (_, _, _, png) in zip(ids, prepared, strict=True) if png is not None]
                if crops:
                    cur.executemany("INSERT INTO face_crops (face_id, png) VALUES (%s, %s)", crops)
        return [
            FaceRecord(fid, sid, f.model_id, f.box, f.quality, f.image_sha256, now)
            for fid, (sid, f, _, _) in zip(ids, prepared, strict=True)
        ]

    def list_faces(self, subject_id: str) -> list[FaceRecord]:
        with self._conn() as conn:
            self._subject_pk(conn, subject_id)
            rows = conn.execute(f"SELECT {_FACE_COLS} {_FACE_FROM} WHERE s.id = %s ORDER BY f.id", (subject_id,))
            return [_face(r) for r in rows]

    @staticmethod
    def _subject_pk(conn: psycopg.Connection[Any], subject_id: str) -> int:
        row = conn.execute("SELECT pk FROM subjects WHERE id = %s", (subject_id,)).fetchone()
        if row is None:
            raise SubjectNotFound(f"no subject with id {subject_id!r}")
        return int(row[0])

    def get_face(self, face_id: int) -> FaceRecord:
        with self._conn() as conn:
            row = conn.execute(f"SELECT {_FACE_COLS} {_FACE_FROM} WHERE f.id = %s", (int(face_id),)).fetchone()
        if row is None:
            raise FaceNotFound(f"no face with id {face_id}")
        return _face(row)

    def delete_face(self, face_id: int) -> None:
        with self._conn() as conn:
            row = conn.execute("DELETE FROM faces WHERE id = %s RETURNING id", (int(face_id),)).fetchone()
        if row is None:
            raise FaceNotFound(f"no face with id {face_id}")

    def find_face_by_sha256(self, sha256: str, *, subject_id: str | None = None) -> FaceRecord | None:
        query = f"SELECT {_FACE_COLS} {_FACE_FROM} WHERE f.image_sha256 = %s"
        args: list[Any] = [sha256]
        if subject_id is not None:
            query += " AND s.id = %s"
            args.append(subject_id)
        with self._conn() as conn:
            row = conn.execute(query + " ORDER BY f.id LIMIT 1", args).fetchone()
        return _face(row) if row is not None else None

    def face_embeddings(self, subject_id: str, *, model_id: str) -> npt.NDArray[np.float32]:
        with self._conn() as conn:
            pk = self._subject_pk(conn, subject_id)
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

    # ================================================================== search
    def search(self, probes: npt.NDArray[np.float32], *, model_id: str, top_k: int = 5) -> list[list[Candidate]]:
        if top_k < 1:
            raise ValueError("top_k must be >= 1")
        q = unit_vectors(probes, "probe")
        with self._conn() as conn:
            by_model = vectors.models_with_faces(conn)
            live = by_model.get(model_id, 0)
            if live == 0:
                if by_model:
                    present = tuple(sorted(by_model))
                    raise ModelMismatch(
                        f"no faces of model {model_id!r} in the gallery; it holds faces of {', '.join(present)}",
                        requested=model_id,
                        present=present,
                    )
                return [[] for _ in range(len(q))]
            if len(q) == 0:
                return []
            return vectors.search_subjects(conn, q, model_id, top_k, live, self.options)

    # ================================================================== crops and re-indexing
    def crop_png(self, face_id: int) -> bytes | None:
        with self._conn() as conn:
            row = conn.execute("SELECT png FROM face_crops WHERE face_id = %s", (int(face_id),)).fetchone()
        return bytes(row[0]) if row is not None else None

    @staticmethod
    def _reindex_counts(conn: psycopg.Connection[Any], model_id: str) -> dict[str, int]:
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

    def reindex_counts(self, model_id: str) -> dict[str, int]:
        with self._conn() as conn:
            return self._reindex_counts(conn, model_id)

    def crops_to_embed(self, model_id: str, after_id: int, limit: int) -> list[tuple[int, bytes]]:
        with self._conn() as conn:
            rows = conn.execute(
                "SELECT f.id, c.png FROM faces f JOIN face_crops c ON c.face_id = f.id "
                "WHERE f.id > %(after)s AND f.model_id <> %(m)s AND NOT EXISTS "
                "(SELECT 1 FROM face_embeddings e WHERE e.face_id = f.id AND e.model_id = %(m)s) "
                "ORDER BY f.id LIMIT %(n)s",
                {"after": int(after_id), "m": model_id, "n": int(limit)},
            ).fetchall()
        return [(int(r[0]), bytes(r[1])) for r in rows]

    def stage_embeddings(self, model_id: str, face_ids: Sequence[int], embeddings: npt.NDArray[np.float32]) -> int:
        vecs = unit_vectors(embeddings, "embedding")
        if len(vecs) != len(face_ids):
            raise InvalidEmbedding(f"{len(face_ids)} face ids but {len(vecs)} embeddings")
        if not len(vecs):
            return 0
        with self._conn() as conn:
            self._ensure_vector_index(conn, model_id)  # the switch fills it; build it empty now
            with conn.transaction(), conn.cursor() as cur:
                cur.execute(
                    "INSERT INTO face_embeddings (face_id, model_id, embedding, created_at) "
                    "SELECT u.fid, %s, u.v, %s FROM unnest(%s::bigint[], %s::vector[]) AS u(fid, v) "
                    "WHERE EXISTS (SELECT 1 FROM faces f WHERE f.id = u.fid) "
                    "ON CONFLICT (face_id, model_id) DO UPDATE "
                    "SET embedding = excluded.embedding, created_at = excluded.created_at",
                    (model_id, time.time(), [int(f) for f in face_ids], list(vecs)),
                )
                return max(cur.rowcount, 0)

    def switch_model(self, model_id: str) -> int:
        """Make ``model_id`` every face's model from the staged embeddings, in one transaction that blocks writes
        to ``faces`` (not reads: searches keep answering from the old model until it commits)."""
        with self._conn() as conn:
            self._ensure_vector_index(conn, model_id)
            with conn.transaction():
                conn.execute("LOCK TABLE faces IN SHARE ROW EXCLUSIVE MODE")
                counts = self._reindex_counts(conn, model_id)
                missing = counts["todo"] - counts["staged"]
                if missing:
                    raise ReindexIncomplete(
                        f"{missing} of {counts['todo']} faces have no embedding of model {model_id!r} yet; "
                        "run `facerec reindex` to finish",
                        missing=missing,
                    )
                cur = conn.execute(
                    "UPDATE faces f SET model_id = e.model_id, embedding = e.embedding FROM face_embeddings e "
                    "WHERE e.face_id = f.id AND e.model_id = %(m)s AND f.model_id <> %(m)s",
                    {"m": model_id},
                )
                switched = max(cur.rowcount, 0)
                conn.execute("DELETE FROM face_embeddings WHERE model_id = %s", (model_id,))
        return switched

    # ================================================================== counts
    def face_count(self, model_id: str) -> int:
        with self._conn() as conn:
            row = conn.execute("SELECT n FROM counts WHERE name = %s", ("model:" + model_id,)).fetchone()
        return int(row[0]) if row else 0

    def subject_count(self) -> int:
        with self._conn() as conn:
            row = conn.execute("SELECT n FROM counts WHERE name = 'subjects'").fetchone()
        return int(row[0]) if row else 0

    def stats(self) -> GalleryStats:
        with self._conn() as conn:
            by_model = vectors.models_with_faces(conn)
            subjects = conn.execute("SELECT n FROM counts WHERE name = 'subjects'").fetchone()
            last = conn.execute("SELECT coalesce(max(id), 0) FROM faces").fetchone()
            indexes = {}
            for model_id, n in by_model.items():
                has_hnsw = conn.execute("SELECT to_regclass(%s)", (vectors.index_name(model_id),)).fetchone()
                exact = n <= self.options.exact_below or not (has_hnsw and has_hnsw[0])
                indexes[model_id] = IndexInfo(
                    kind="flat" if exact else "hnsw",
                    live=n,
                    hnsw=0 if exact else n,
                    flat=n if exact else 0,
                    tombstones=0,
                    building=False,
                )
        return GalleryStats(
            subjects=int(subjects[0]) if subjects else 0,
            faces=sum(by_model.values()),
            faces_by_model=by_model,
            indexes=indexes,
            snapshots={},
            last_change=(int(last[0]) if last else 0, 0),
        )

    def save_snapshot(self) -> None:
        """Nothing to save: PostgreSQL holds everything, including the HNSW indexes."""

    def close(self) -> None:
        """Close the connection pool (waits for connections in use to come back)."""
        self._pool.close()

    def __enter__(self) -> PostgresGallery:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
