"""The SQL of the :class:`~service.photos.base.PhotoStore`, shared by the embedded SQLite store
(:mod:`service.photos.sqlite`) and the PostgreSQL one (:mod:`service.pgstores.photos`): both have the same
tables (``photos``, ``observations``, ``cannot_link``, ``merged_faces``, ``counters``; cluster edits in
:mod:`service.photos.sqlclusters`) and give :class:`SqlPhotoStore` a write
transaction (all or nothing, writers serialised) and a reader. Embeddings are 512-byte little-endian float32
blobs; ``box`` and ``quality`` JSON text.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any

import numpy as np
import numpy.typing as npt

from embeddings.types import EMBEDDING_DIM
from service.photos.errors import ClusterNotFound, PhotoNotFound
from service.photos.sqlclusters import SqlClusterEdits
from service.photos.types import ClusterSummary, Naming, NewObservation, Observation, Photo
from service.sqlconn import SqlConn

OBS_COLUMNS = (
    "id, photo_id, model_id, box, quality, subject_id, distance, cluster_id, face_id, created_at, crop IS NOT NULL"
)


def _obs(row: Sequence[Any]) -> Observation:
    return Observation(
        id=int(row[0]),
        photo_id=row[1],
        model_id=row[2],
        box=json.loads(row[3]),
        quality=json.loads(row[4]),
        subject_id=row[5],
        distance=row[6],
        cluster_id=row[7],
        face_id=row[8],
        created_at=float(row[9]),
        has_crop=bool(row[10]),
    )


def _photo(row: Sequence[Any]) -> Photo:
    return Photo(id=row[0], sha256=row[1], external_id=row[2], created_at=float(row[3]))


def _vectors(blobs: Sequence[bytes]) -> npt.NDArray[np.float32]:
    if not blobs:
        return np.zeros((0, EMBEDDING_DIM), np.float32)
    return np.frombuffer(b"".join(blobs), dtype="<f4").reshape(len(blobs), EMBEDDING_DIM).astype(np.float32)


def quality_score(quality: Mapping[str, Any]) -> float:
    """Ordering of faces to show first: sharper and larger is better (dimensionless; not a gate)."""
    size = float(quality.get("face_size") or 0.0)
    sharp = float(quality.get("sharpness") or 0.0)
    return min(size, 160.0) + min(sharp, 500.0) / 5.0


class SqlPhotoStore(SqlClusterEdits):
    """:class:`~service.photos.base.PhotoStore` over :meth:`transaction` and :meth:`reader`; thread-safe."""

    # ---------------------------------------------------------------- photos
    def add_photo(
        self, *, sha256: str, external_id: str | None, faces: Sequence[NewObservation]
    ) -> tuple[Photo, list[Observation], bool]:
        return self.add_photos([(sha256, external_id, faces)])[0]

    def add_photos(
        self, photos: Sequence[tuple[str, str | None, Sequence[NewObservation]]]
    ) -> list[tuple[Photo, list[Observation], bool]]:
        with self.transaction() as c:
            fresh: dict[int, int] = {}  # provisional (negative) cluster id -> new cluster id
            out = [self._insert_photo(c, sha, ext, faces, fresh) for sha, ext, faces in photos]
            if any(created for _, _, created in out):
                self._bump(c)
            return out

    def _insert_photo(
        self, c: SqlConn, sha256: str, external_id: str | None, faces: Sequence[NewObservation], fresh: dict[int, int]
    ) -> tuple[Photo, list[Observation], bool]:
        row = c.execute("SELECT id, sha256, external_id, created_at FROM photos WHERE sha256 = ?", (sha256,))
        existing = row.fetchone()
        if existing is not None:
            photo = _photo(existing)
            return photo, self._photo_faces(c, photo.id), False
        now = time.time()
        photo = Photo(id=uuid.uuid4().hex, sha256=sha256, external_id=external_id, created_at=now)
        c.execute("INSERT INTO photos VALUES (?, ?, ?, ?)", (photo.id, sha256, external_id, now))
        for f in faces:
            cluster = f.cluster_id
            if f.subject_id is not None:
                cluster = None
            elif cluster is None:
                (cluster,) = self._next_clusters(c, 1)
            elif cluster < 0:
                if cluster not in fresh:
                    (fresh[cluster],) = self._next_clusters(c, 1)
                cluster = fresh[cluster]
            c.execute(
                "INSERT INTO observations (photo_id, model_id, embedding, box, quality, score, crop, subject_id,"
                " distance, cluster_id, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    photo.id,
                    f.model_id,
                    np.asarray(f.embedding, dtype="<f4").tobytes(),
                    json.dumps(f.box),
                    json.dumps(f.quality),
                    quality_score(f.quality),
                    f.crop_png,
                    f.subject_id,
                    f.distance,
                    cluster,
                    now,
                ),
            )
        return photo, self._photo_faces(c, photo.id), True

    @staticmethod
    def _photo_faces(c: SqlConn, photo_id: str) -> list[Observation]:
        rows = c.execute(f"SELECT {OBS_COLUMNS} FROM observations WHERE photo_id = ? ORDER BY id", (photo_id,))
        return [_obs(r) for r in rows.fetchall()]

    def find_photo(self, sha256: str) -> Photo | None:
        rows = self._read("SELECT id, sha256, external_id, created_at FROM photos WHERE sha256 = ?", (sha256,))
        return _photo(rows[0]) if rows else None

    def get_photo(self, photo_id: str) -> Photo:
        rows = self._read("SELECT id, sha256, external_id, created_at FROM photos WHERE id = ?", (photo_id,))
        if not rows:
            raise PhotoNotFound(f"no photo {photo_id!r}")
        return _photo(rows[0])

    def photo_faces(self, photo_id: str) -> list[Observation]:
        with self.reader() as c:
            return self._photo_faces(c, photo_id)

    def delete_photo(self, photo_id: str) -> list[Observation]:
        with self.transaction() as c:
            faces = self._photo_faces(c, photo_id)
            if c.execute("DELETE FROM photos WHERE id = ?", (photo_id,)).rowcount == 0:
                raise PhotoNotFound(f"no photo {photo_id!r}")
            self._bump(c)
        self._forget()
        return faces

    def known_sha256s(self) -> set[str]:
        return {r[0] for r in self._read("SELECT sha256 FROM photos")}

    # ---------------------------------------------------------------- faces
    def _rows_by_id(self, columns: str, ids: Sequence[int]) -> dict[int, Any]:
        """``{id: row}`` of the observations among ``ids`` (``columns`` start with ``id``), read 500 ids a query."""
        by_id: dict[int, Any] = {}
        for start in range(0, len(ids), 500):
            part = [int(i) for i in ids[start : start + 500]]
            marks = ",".join("?" * len(part))
            for r in self._read(f"SELECT {columns} FROM observations WHERE id IN ({marks})", part):
                by_id[int(r[0])] = r
        return by_id

    def get_faces(self, ids: Sequence[int]) -> list[Observation]:
        by_id = self._rows_by_id(OBS_COLUMNS, ids)
        return [_obs(by_id[int(i)]) for i in ids if int(i) in by_id]

    def embeddings_of(self, ids: Sequence[int]) -> npt.NDArray[np.float32]:
        by_id = self._rows_by_id("id, embedding", ids)
        return _vectors([by_id[int(i)][1] for i in ids if int(i) in by_id])

    def all_embeddings(
        self, model_id: str, *, unnamed_only: bool = False, after: int = 0
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
        where = " AND subject_id IS NULL" if unnamed_only else ""
        sql = f"SELECT id, embedding FROM observations WHERE model_id = ? AND id > ?{where} ORDER BY id"
        rows = self._read(sql, (model_id, after))
        return np.array([r[0] for r in rows], dtype=np.int64), _vectors([r[1] for r in rows])

    def crop_png(self, face_id: int) -> bytes | None:
        rows = self._read("SELECT crop FROM observations WHERE id = ?", (face_id,))
        return bytes(rows[0][0]) if rows and rows[0][0] is not None else None

    def photos_of_subject(
        self, subject_id: str, *, limit: int, after: tuple[float, str] | None = None
    ) -> list[tuple[Photo, list[Observation]]]:
        where, args = ("", ()) if after is None else (" AND (p.created_at, p.id) < (?, ?)", after)
        with self.reader() as c:
            photos = c.execute(
                "SELECT p.id, p.sha256, p.external_id, p.created_at FROM photos p WHERE p.id IN"
                f" (SELECT photo_id FROM observations WHERE subject_id = ?){where}"
                " ORDER BY p.created_at DESC, p.id DESC LIMIT ?",
                (subject_id, *args, limit),
            ).fetchall()
            out = []
            for row in photos:
                faces = c.execute(
                    f"SELECT {OBS_COLUMNS} FROM observations WHERE photo_id = ? AND subject_id = ? ORDER BY id",
                    (row[0], subject_id),
                ).fetchall()
                out.append((_photo(row), [_obs(f) for f in faces]))
            return out

    def set_subject(self, ids: Sequence[int], subject_id: str, face_ids: Mapping[int, int]) -> None:
        with self.transaction() as c:
            for i in ids:
                c.execute(
                    "UPDATE observations SET subject_id = ?, cluster_id = NULL, face_id = ? WHERE id = ?",
                    (subject_id, face_ids.get(int(i)), int(i)),
                )
                c.execute("DELETE FROM merged_faces WHERE face_id = ?", (int(i),))  # a person decided who it is
            self._bump(c)

    def unname_subject(self, subject_id: str) -> list[int]:
        with self.transaction() as c:
            ids = [r[0] for r in c.execute("SELECT id FROM observations WHERE subject_id = ?", (subject_id,))]
            if ids:
                (cluster,) = self._next_clusters(c, 1)
                c.execute(
                    "UPDATE observations SET subject_id = NULL, distance = NULL, face_id = NULL, cluster_id = ?"
                    " WHERE subject_id = ?",
                    (cluster, subject_id),
                )
                self._bump(c)
            return ids

    def _delete_where(self, where: str, args: Sequence[Any]) -> list[Observation]:
        with self.transaction() as c:
            faces = [_obs(r) for r in c.execute(f"SELECT {OBS_COLUMNS} FROM observations WHERE {where}", args)]
            c.execute(f"DELETE FROM observations WHERE {where}", args)
            if faces:
                self._bump(c)
        if faces:
            self._forget()
        return faces

    def _forget(self) -> None:
        """After an erasure committed: leave no copy of the erased rows in the store's files (SQLite: truncate
        the WAL). A database server's store has nothing to do here (docs/GALLERY.md, "What erasure removes")."""
        return None

    def subject_faces(self, subject_id: str) -> list[Observation]:
        rows = self._read(f"SELECT {OBS_COLUMNS} FROM observations WHERE subject_id = ? ORDER BY id", (subject_id,))
        return [_obs(r) for r in rows]

    def delete_subject_faces(self, subject_id: str) -> list[Observation]:
        return self._delete_where("subject_id = ?", (subject_id,))

    def delete_unnamed_before(self, created_before: float) -> list[Observation]:
        return self._delete_where("subject_id IS NULL AND created_at < ?", (created_before,))

    # ---------------------------------------------------------------- clusters
    def list_clusters(
        self, *, limit: int, sample: int, after: tuple[int, int] | None = None, min_size: int = 1
    ) -> tuple[list[ClusterSummary], int]:
        groups = "FROM observations WHERE cluster_id IS NOT NULL GROUP BY cluster_id HAVING COUNT(*) >= ?"
        keyset, args = "", [min_size]
        if after is not None:  # after the previous page's last (size, id): largest first, then oldest id
            keyset = " AND (COUNT(*) < ? OR (COUNT(*) = ? AND cluster_id > ?))"
            args += [after[0], after[0], after[1]]
        with self.reader() as c:
            total = c.execute(f"SELECT COUNT(*) FROM (SELECT cluster_id {groups}) t", (min_size,)).fetchone()[0]
            rows = c.execute(
                f"SELECT cluster_id, COUNT(*) AS n {groups}{keyset} ORDER BY n DESC, cluster_id LIMIT ?", (*args, limit)
            ).fetchall()
            out = []
            for cid, n in rows:
                ids = c.execute(
                    "SELECT id FROM observations WHERE cluster_id = ? ORDER BY score DESC, id LIMIT ?", (cid, sample)
                ).fetchall()
                out.append(ClusterSummary(id=int(cid), size=int(n), sample_face_ids=[int(r[0]) for r in ids]))
            return out, int(total)

    def cluster_faces(self, cluster_id: int) -> list[Observation]:
        rows = self._read(
            f"SELECT {OBS_COLUMNS} FROM observations WHERE cluster_id = ? ORDER BY score DESC, id", (cluster_id,)
        )
        if not rows:
            raise ClusterNotFound(f"no cluster {cluster_id}")
        return [_obs(r) for r in rows]

    def cluster_of(self, ids: Sequence[int]) -> dict[int, int]:
        return {f.id: f.cluster_id for f in self.get_faces(ids) if f.cluster_id is not None and f.subject_id is None}

    def unnamed_count(self, model_id: str) -> int:
        rows = self._read("SELECT COUNT(*) FROM observations WHERE subject_id IS NULL AND model_id = ?", (model_id,))
        return int(rows[0][0])

    def model_ids(self) -> list[str]:
        return [r[0] for r in self._read("SELECT DISTINCT model_id FROM observations")]

    def observation_count(self, model_id: str) -> int:
        return int(self._read("SELECT COUNT(*) FROM observations WHERE model_id = ?", (model_id,))[0][0])

    @contextmanager
    def maintenance_turn(self) -> Iterator[bool]:
        """Always this process's turn (one process holds an embedded store)."""
        yield True

    def naming_lock(self) -> AbstractContextManager[None]:
        return nullcontext()  # one process holds an embedded store; the library's write lock serialises it

    # ---------------------------------------------------------------- naming intents
    def begin_naming(
        self, *, cluster_id: int, faces: Sequence[int], enrol: Sequence[int], subject_id: str | None, name: str | None
    ) -> Naming:
        ids, good = [int(i) for i in faces], [int(i) for i in enrol]
        with self.transaction() as c:
            row = c.execute(
                "INSERT INTO namings (cluster_id, faces, enrol, subject_id, name, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?) RETURNING id",
                (cluster_id, json.dumps(ids), json.dumps(good), subject_id, name, time.time()),
            ).fetchone()
        return Naming(int(row[0]), cluster_id, ids, good, subject_id, name)

    def pending_namings(self) -> list[Naming]:
        rows = self._read("SELECT id, cluster_id, faces, enrol, subject_id, name FROM namings ORDER BY id")
        return [Naming(int(r[0]), int(r[1]), json.loads(r[2]), json.loads(r[3]), r[4], r[5]) for r in rows]

    def end_naming(self, naming_id: int) -> None:
        with self.transaction() as c:
            c.execute("DELETE FROM namings WHERE id = ?", (naming_id,))

    def change_count(self) -> int:
        return int(self._read("SELECT value FROM counters WHERE name = 'changes'")[0][0])

    def close(self) -> None:
        """Release the store's connection (a database store's pool belongs to the backend)."""
        return None
