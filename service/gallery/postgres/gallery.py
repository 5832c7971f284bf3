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

import math
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import numpy.typing as npt
import psycopg
from psycopg_pool import ConnectionPool

from service.gallery.crops import encode_crop
from service.gallery.errors import InvalidEmbedding
from service.gallery.grouping import group_subjects, nearest_subjects
from service.gallery.postgres import faces, locks, staging, subjects, vectors
from service.gallery.postgres.connection import answers_within
from service.gallery.postgres.errors import db_errors
from service.gallery.postgres.vectors import VectorOptions
from service.gallery.types import Candidate, FaceRecord, GalleryStats, IndexInfo, NewFace, Subject
from service.gallery.validation import check_limit, new_face_vectors, unit_vectors


class PostgresGallery:
    """The gallery of one PostgreSQL database, over a connection pool (see :mod:`.database` to open one). The SQL
    lives in :mod:`.subjects`, :mod:`.faces`, :mod:`.vectors` and :mod:`.staging`; this class borrows a connection
    per call and maps database failures to the gallery's errors."""

    def __init__(self, pool: ConnectionPool[psycopg.Connection[Any]], *, options: VectorOptions | None = None) -> None:
        self._pool = pool
        self.options = options or VectorOptions()
        self._health: psycopg.Connection[Any] | None = None  # check_available's own connection, kept open
        self._health_lock = threading.Lock()
        with self._conn() as conn:
            row = conn.execute("SELECT value FROM meta WHERE key = 'gallery_uuid'").fetchone()
        self.gallery_uuid = str(row[0]) if row else ""

    def _ensure_vector_index(self, conn: psycopg.Connection[Any], model_id: str) -> None:
        """Make the vector index of ``model_id`` exist (the seam a vector engine outside PostgreSQL overrides:
        Milvus makes its collections itself)."""
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
        if not items:
            return []
        with self._conn() as conn:
            return subjects.create(conn, items)

    def get_subject(self, subject_id: str) -> Subject:
        with self._conn() as conn:
            return subjects.get(conn, subject_id)

    def list_subjects(self, *, limit: int = 50, cursor: str | None = None) -> tuple[list[Subject], str | None]:
        check_limit("limit", limit)
        with self._conn() as conn:
            return subjects.page(conn, limit, cursor)

    def update_subject(
        self, subject_id: str, *, name: str | None = None, metadata: dict[str, Any] | None = None
    ) -> Subject:
        with self._conn() as conn:
            return subjects.update(conn, subject_id, name, metadata)

    def delete_subject(self, subject_id: str) -> int:
        with self._conn() as conn:
            return subjects.delete(conn, subject_id)

    # ================================================================== faces
    def add_faces(self, subject_id: str, faces: Sequence[NewFace]) -> list[FaceRecord]:
        return self.add_faces_many({subject_id: faces})

    def add_faces_many(self, batch: Mapping[str, Sequence[NewFace]]) -> list[FaceRecord]:
        todo: list[faces.Enrolment] = []
        for sid, new in batch.items():
            if new:
                for f, v in zip(new, new_face_vectors(new), strict=True):
                    todo.append(faces.Enrolment(sid, f, v, encode_crop(f.crop) if f.crop is not None else None))
        if not todo:
            return []
        now = time.time()
        with self._conn() as conn:
            ids, unindexed = faces.enrol(conn, todo, now)
            for model_id in unindexed:  # a model's first faces: its (small) index is built now
                self._ensure_vector_index(conn, model_id)
        return [
            FaceRecord(fid, e.subject_id, e.face.model_id, e.face.box, e.face.quality, e.face.image_sha256, now)
            for fid, e in zip(ids, todo, strict=True)
        ]

    def list_faces(self, subject_id: str) -> list[FaceRecord]:
        with self._conn() as conn:
            return faces.of_subject(conn, subject_id)

    def get_face(self, face_id: int) -> FaceRecord:
        with self._conn() as conn:
            return faces.get(conn, face_id)

    def delete_face(self, face_id: int) -> None:
        with self._conn() as conn:
            faces.delete(conn, face_id)

    def find_face_by_sha256(self, sha256: str, *, subject_id: str | None = None) -> FaceRecord | None:
        with self._conn() as conn:
            return faces.by_sha256(conn, sha256, subject_id)

    @contextmanager
    def subject_writes(self, subject_id: str) -> Iterator[None]:
        """A session advisory lock per subject (:data:`locks.SUBJECT_WRITES`), held on a connection of its
        own while the block runs (the block's statements use other connections); released when the block ends,
        or by the server if this process dies. Waited for at most the pool's timeout (``FACEREC_DB_TIMEOUT_S``),
        then :class:`StorageUnavailable`: a holder that stopped (a frozen replica) keeps its session alive."""
        with self._conn() as conn, locks.held(conn, locks.SUBJECT_WRITES, subject_id, wait_s=self._pool.timeout):
            yield

    def face_embeddings(self, subject_id: str, *, model_id: str) -> npt.NDArray[np.float32]:
        with self._conn() as conn:
            return faces.embeddings(conn, subject_id, model_id)

    def subjects_embeddings(self, subject_ids: Sequence[str], *, model_id: str) -> dict[str, npt.NDArray[np.float32]]:
        with self._conn() as conn:
            return faces.embeddings_of_subjects(conn, subject_ids, model_id)

    # ================================================================== search
    def search(self, probes: npt.NDArray[np.float32], *, model_id: str, top_k: int = 5) -> list[list[Candidate]]:
        check_limit("top_k", top_k)
        q = unit_vectors(probes, "probe")
        with self._conn() as conn:
            by_model = vectors.models_with_faces(conn)
            exact = by_model.get(model_id, 0) <= self.options.exact_below

            def fetch(k: int) -> list[list[Candidate]]:
                hits = vectors.nearest_faces(conn, q, model_id, k, exact=exact, opts=self.options)
                return [group_subjects(h, top_k) for h in hits]

            return nearest_subjects(
                fetch,
                faces_by_model=by_model,
                model_id=model_id,
                probes=len(q),
                top_k=top_k,
                overfetch=self.options.overfetch,
            )

    # ================================================================== crops and re-indexing
    def crop_png(self, face_id: int) -> bytes | None:
        with self._conn() as conn:
            row = conn.execute("SELECT png FROM face_crops WHERE face_id = %s", (int(face_id),)).fetchone()
        return bytes(row[0]) if row is not None else None

    def reindex_counts(self, model_id: str) -> dict[str, int]:
        with self._conn() as conn:
            return staging.counts(conn, model_id)

    def crops_to_embed(self, model_id: str, after_id: int, limit: int) -> list[tuple[int, bytes]]:
        with self._conn() as conn:
            return staging.crops_to_embed(conn, model_id, after_id, limit)

    def stage_embeddings(self, model_id: str, face_ids: Sequence[int], embeddings: npt.NDArray[np.float32]) -> int:
        vecs = unit_vectors(embeddings, "embedding")
        if len(vecs) != len(face_ids):
            raise InvalidEmbedding(f"{len(face_ids)} face ids but {len(vecs)} embeddings")
        if not len(vecs):
            return 0
        with self._conn() as conn:
            self._ensure_vector_index(conn, model_id)  # the switch fills it; build it empty now
            return staging.stage(conn, model_id, face_ids, vecs)

    def switch_model(self, model_id: str) -> int:
        """Make ``model_id`` every face's model from the staged embeddings, in one transaction that blocks writes
        to ``faces`` (not reads: searches keep answering from the old model until it commits)."""
        with self._conn() as conn:
            self._ensure_vector_index(conn, model_id)
            return staging.switch(conn, model_id)

    # ================================================================== counts
    def face_count(self, model_id: str) -> int:
        with self._conn() as conn:
            row = conn.execute(
                "SELECT coalesce(sum(n), 0) FROM counts WHERE name = %s", ("model:" + model_id,)
            ).fetchone()
        return int(row[0]) if row else 0

    def subject_count(self) -> int:
        with self._conn() as conn:
            row = conn.execute("SELECT coalesce(sum(n), 0) FROM counts WHERE name = 'subjects'").fetchone()
        return int(row[0]) if row else 0

    def stats(self) -> GalleryStats:
        with self._conn() as conn:
            by_model = vectors.models_with_faces(conn)
            subjects = conn.execute("SELECT coalesce(sum(n), 0) FROM counts WHERE name = 'subjects'").fetchone()
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

    def check_available(self) -> None:
        """An empty query on a connection of its own (not a pooled one: a pool busy with requests is no outage),
        kept open between checks and made again once broken; :class:`StorageUnavailable` if the database does not
        answer within the pool's timeout (libpq's connect timeout is whole seconds, at least 2)."""
        timeout = self._pool.timeout
        with self._health_lock, db_errors():
            if self._health is not None and not self._health.closed:
                started = time.monotonic()
                try:
                    answers_within(timeout)(self._health)
                    return
                except psycopg.OperationalError:  # the check closed it
                    if time.monotonic() - started >= timeout:
                        raise  # no answer in time: that is the answer
                    # broken at once (the server restarted since the last check): a new connection is tried
            connect_s = max(2, math.ceil(timeout))
            self._health = psycopg.connect(str(self._pool.conninfo), connect_timeout=connect_s, autocommit=True)
            answers_within(timeout)(self._health)

    def close(self) -> None:
        """Close the connection pool (waits for connections in use to come back) and the check's connection."""
        with self._health_lock:
            if self._health is not None:
                self._health.close()
        self._pool.close()

    def __enter__(self) -> PostgresGallery:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
