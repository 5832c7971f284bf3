"""``LocalGallery``: the SQLite store (truth) + per-model FAISS indexes (cache) in one data dir.

Write path (the durability contract): validate -> SQLite transaction committed with ``synchronous=FULL``
(this is the acknowledgement) -> the in-memory index is updated -> return. Snapshots are written by a
maintenance thread every ``snapshot_every_changes`` changes or ``snapshot_interval_s`` seconds, soon after any
erasure, and at close; at open each model's snapshot is loaded and changes after it replayed from SQLite, or
the index is rebuilt from SQLite when the snapshot is missing, corrupt, from another gallery/schema or
inconsistent with SQLite.

HNSW conversion: when a model's live faces reach ``hnsw_threshold`` the maintenance thread builds an HNSW
main in the background from frozen copies (searches keep running on the exact flat index meanwhile), then
swaps it in; with ``auto_maintain=False`` call :meth:`LocalGallery.maintain` yourself.

Locks, always taken in this order: ``_maint`` (one maintenance at a time) -> ``_write`` (one writer) ->
``_rw`` (shared for searches, exclusive for index mutation).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from embeddings.types import EMBEDDING_DIM
from service.gallery import snapshot
from service.gallery.crops import encode_crop
from service.gallery.errors import (
    InvalidCursor,
    InvalidEmbedding,
    ModelMismatch,
    ReindexIncomplete,
    SnapshotInvalid,
)
from service.gallery.index import IndexParams, ModelIndex, build_hnsw
from service.gallery.lock import DataDirLock
from service.gallery.rwlock import RWLock
from service.gallery.store import SCHEMA_VERSION, SQLiteStore, storage_errors
from service.gallery.types import (
    Candidate,
    FaceRecord,
    GalleryStats,
    IndexInfo,
    NewFace,
    SnapshotInfo,
    Subject,
)

log = logging.getLogger("facerec.gallery")

ProgressFn = Callable[[str, int, int], None]
"""``progress(stage, done, total)``: e.g. ``("rebuild facenet-...", 30000, 100000)``, in faces."""

UNIT_TOLERANCE = 1e-2
"""Embeddings whose L2 norm is off 1 by more than this are rejected (not silently normalised)."""


@dataclass(frozen=True, slots=True)
class GallerySettings:
    """Tunables of :class:`LocalGallery`; ``index`` holds the FAISS ones."""

    index: IndexParams = field(default_factory=IndexParams)
    snapshot_every_changes: int = 10_000
    snapshot_interval_s: float = 300.0
    erasure_snapshot_delay_s: float = 5.0
    auto_maintain: bool = True
    maintenance_tick_s: float = 1.0
    snapshot_retry_s: float = 30.0
    """After a failed snapshot save (disk full, read-only), wait this long before the next attempt."""
    overfetch: int = 8


class _Cancelled(Exception):
    pass


def _unit_vectors(x: Any, what: str) -> npt.NDArray[np.float32]:
    arr = np.asarray(x, dtype=np.float32)
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2 or arr.shape[1] != EMBEDDING_DIM:
        raise InvalidEmbedding(f"{what}: expected shape (n, {EMBEDDING_DIM}), got {np.shape(x)}")
    if not np.isfinite(arr).all():
        raise InvalidEmbedding(f"{what}: not finite")
    norms = np.linalg.norm(arr, axis=1)
    if len(arr) and np.abs(norms - 1.0).max() > UNIT_TOLERANCE:
        raise InvalidEmbedding(f"{what}: not unit vectors (norms {norms.min():.3f}..{norms.max():.3f})")
    return np.ascontiguousarray(arr / norms[:, None], dtype=np.float32)


def _encode_cursor(pk: int) -> str:
    return base64.urlsafe_b64encode(f"s{pk}".encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> int:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        if not raw.startswith("s"):
            raise ValueError(cursor)
        return int(raw[1:])
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise InvalidCursor(f"invalid cursor {cursor[:40]!r}") from None


class LocalGallery:
    """The SQLite + FAISS gallery of one data dir. Implements :class:`service.gallery.base.Gallery`."""

    def __init__(self, data_dir: Path, settings: GallerySettings, progress: ProgressFn | None = None) -> None:
        self.data_dir = Path(data_dir)
        self.settings = settings
        self._progress = progress
        self._lock = DataDirLock(self.data_dir)
        self._lock.acquire()
        self._write = threading.Lock()
        self._rw = RWLock()
        self._maint = threading.Lock()
        self._stop = threading.Event()
        self._closed = False
        try:
            self.store = SQLiteStore(self.data_dir)
            self._open_indexes()
        except BaseException:
            with contextlib.suppress(Exception):
                self.store.close()
            self._lock.release()
            raise
        self._thread: threading.Thread | None = None
        if settings.auto_maintain:
            self._thread = threading.Thread(target=self._maintenance_loop, name="gallery-maint", daemon=True)
            self._thread.start()

    # ================================================================== open: snapshot, replay, rebuild
    def _open_indexes(self) -> None:
        self._applied = self.store.watermarks()
        ids, pks = self.store.face_subject_pairs()
        self._subject_of = np.full(max(int(ids.max()) + 1 if len(ids) else 0, 1024), -1, dtype=np.int64)
        self._subject_of[ids] = pks
        self._indexes: dict[str, ModelIndex] = {}
        self._snap_info: dict[str, SnapshotInfo] = {}
        self._changes = 0
        """Changes the index holds that no snapshot does (replayed, rebuilt or new); 0 = snapshot current."""
        for model_id in sorted(self.store.faces_by_model()):
            self._indexes[model_id] = self._load_model(model_id)
        self._erased_at: float | None = None
        self._last_snapshot = time.monotonic()
        self._snapshot_failed_at = -float("inf")

    def _load_model(self, model_id: str) -> ModelIndex:
        path = snapshot.snapshot_path(self.data_dir, model_id)
        params = self.settings.index
        try:
            index, header = snapshot.load(path, params)
            max_face, max_del = self._applied
            pruned = int(self.store.meta_get("pruned_deletions_upto", "0"))
            if header.gallery_uuid != self.store.gallery_uuid:
                raise SnapshotInvalid(f"{path}: from another gallery")
            if header.schema_version != SCHEMA_VERSION or header.model_id != model_id:
                raise SnapshotInvalid(f"{path}: schema {header.schema_version} / model {header.model_id!r}")
            if header.max_face_id > max_face or header.max_deletion_seq > max_del:
                raise SnapshotInvalid(f"{path}: newer than the database (restored backup?)")
            if header.max_deletion_seq < pruned:
                raise SnapshotInvalid(f"{path}: older than the kept deletions log")
            for fids, vecs in self.store.iter_embeddings(model_id, after_id=header.max_face_id):
                index.add(fids, vecs)
                self._changes += len(fids)
            dels = self.store.deletions_after(model_id, header.max_deletion_seq)
            index.erase(dels)
            self._changes += len(dels)
            expected = self.store.count_faces(model_id)
            if index.live != expected:
                raise SnapshotInvalid(f"{path}: {index.live} faces after replay, SQLite has {expected}")
            if index.convert_storage():  # e.g. a float32 HNSW saved before fp16 storage: same graph, new codes
                log.info("gallery: converted the %s HNSW to %s storage", model_id, params.hnsw_storage)
                self._changes += self.settings.snapshot_every_changes  # save the converted index soon
            self._snap_info[model_id] = SnapshotInfo(
                str(path), header.max_face_id, header.max_deletion_seq, header.saved_at
            )
            log.info(
                "gallery: loaded %s (%d faces, replayed changes after %s)",
                path,
                index.live,
                (header.max_face_id, header.max_deletion_seq),
            )
            return index
        except SnapshotInvalid as e:
            log.warning("gallery: rebuilding the %s index from SQLite: %s", model_id, e)
        return self._rebuild(model_id)

    def _rebuild(self, model_id: str) -> ModelIndex:
        """A flat index of every face of ``model_id`` read from SQLite (HNSW follows via maintenance)."""
        index = ModelIndex(self.settings.index)
        total = self.store.count_faces(model_id)
        done = 0
        stage = f"rebuild {model_id}"
        if self._progress:
            self._progress(stage, 0, total)
        for fids, vecs in self.store.iter_embeddings(model_id):
            index.add(fids, vecs)
            done += len(fids)
            self._changes += len(fids)
            if self._progress:
                self._progress(stage, done, total)
        return index

    # ================================================================== subjects
    def create_subject(self, *, name: str, metadata: dict[str, Any] | None = None) -> Subject:
        return self.create_subjects([(name, metadata)])[0]

    def create_subjects(self, items: Sequence[tuple[str, dict[str, Any] | None]]) -> list[Subject]:
        """Create several subjects ``(name, metadata)`` in one transaction (bulk enrolment)."""
        with self._write:
            return self.store.insert_subjects([(name, dict(meta or {})) for name, meta in items])

    def get_subject(self, subject_id: str) -> Subject:
        return self.store.get_subject(subject_id)

    def list_subjects(self, *, limit: int = 50, cursor: str | None = None) -> tuple[list[Subject], str | None]:
        if limit < 1:
            raise ValueError("limit must be >= 1")
        after = _decode_cursor(cursor) if cursor else 0
        subjects, last = self.store.list_subjects(limit, after)
        return subjects, (_encode_cursor(last) if last is not None else None)

    def update_subject(
        self, subject_id: str, *, name: str | None = None, metadata: dict[str, Any] | None = None
    ) -> Subject:
        with self._write:
            return self.store.update_subject(subject_id, name, metadata)

    def delete_subject(self, subject_id: str) -> int:
        with self._write:
            faces = self.store.delete_subject(subject_id)
            self._apply_erasure(faces)
        return len(faces)

    # ================================================================== faces
    def add_faces(self, subject_id: str, faces: Sequence[NewFace]) -> list[FaceRecord]:
        return self.add_faces_many({subject_id: faces})

    def add_faces_many(self, batch: Mapping[str, Sequence[NewFace]]) -> list[FaceRecord]:
        """Enrol faces of several subjects in one transaction (bulk enrolment); all or nothing.

        Returns the records in the order given (subject by subject).
        """
        prepared: list[tuple[str, NewFace, bytes, npt.NDArray[np.float32], bytes | None]] = []
        for sid, faces in batch.items():
            if not faces:
                continue
            vecs = _unit_vectors(
                np.stack([np.asarray(f.embedding, np.float32).reshape(-1) for f in faces]), "embedding"
            )
            for f, v in zip(faces, vecs, strict=True):
                if not f.model_id:
                    raise InvalidEmbedding("model_id must be set")
                png = encode_crop(f.crop) if f.crop is not None else None
                prepared.append((sid, f, v.astype("<f4").tobytes(), v, png))
        if not prepared:
            return []
        with self._write:
            # A storage failure (disk full, read-only, I/O) rolls back and raises StorageFull/Unavailable
            # before the index is touched: the index only ever holds committed faces.
            with storage_errors():
                conn = self.store.begin()
                try:
                    pks: dict[str, int] = {}
                    for sid in batch:
                        pks[sid] = self.store.subject_pk(sid, conn)
                    records = self.store.insert_faces(conn, [(pks[s], s, f, b, c) for s, f, b, _, c in prepared])
                    watermarks = self.store.watermarks(conn)
                    self.store.commit()  # <- the acknowledgement: durable from here on
                except BaseException:
                    self.store.rollback()
                    raise
            ids = np.fromiter((r.id for r in records), np.int64, len(records))
            vecs = np.stack([p[3] for p in prepared])
            models = np.array([r.model_id for r in records])
            with self._rw.exclusive():
                top = int(ids.max())
                if top >= len(self._subject_of):
                    grown = np.full(max(top + 1, 2 * len(self._subject_of)), -1, np.int64)
                    grown[: len(self._subject_of)] = self._subject_of
                    self._subject_of = grown
                self._subject_of[ids] = [pks[r.subject_id] for r in records]
                for model_id in np.unique(models):
                    sel = models == model_id
                    idx = self._indexes.get(str(model_id))
                    if idx is None:
                        idx = self._indexes[str(model_id)] = ModelIndex(self.settings.index)
                    idx.add(ids[sel], vecs[sel])
                self._applied = watermarks
            self._changes += len(records)
        return records

    def list_faces(self, subject_id: str) -> list[FaceRecord]:
        return self.store.list_faces(subject_id)

    def get_face(self, face_id: int) -> FaceRecord:
        return self.store.get_face(face_id)

    def delete_face(self, face_id: int) -> None:
        with self._write:
            model_id = self.store.delete_face(face_id)
            self._apply_erasure([(face_id, model_id)])

    def _apply_erasure(self, faces: list[tuple[int, str]]) -> None:
        """After the SQLite commit (caller holds ``_write``): drop from the index, truncate the WAL."""
        with self._rw.exclusive():
            for model_id in {m for _, m in faces}:
                idx = self._indexes.get(model_id)
                if idx is not None:
                    idx.erase([f for f, m in faces if m == model_id])
            for fid, _ in faces:
                if fid < len(self._subject_of):
                    self._subject_of[fid] = -1
            self._applied = self.store.watermarks()
        try:
            self.store.checkpoint()
        except Exception as e:  # a busy checkpoint is retried at the next snapshot
            log.warning("gallery: WAL checkpoint after erasure failed: %s", e)
        self._changes += len(faces)
        if faces and self._erased_at is None:
            self._erased_at = time.monotonic()

    def find_face_by_sha256(self, sha256: str, *, subject_id: str | None = None) -> FaceRecord | None:
        return self.store.find_face_by_sha256(sha256, subject_id)

    def face_embeddings(self, subject_id: str, *, model_id: str) -> npt.NDArray[np.float32]:
        vecs, models = self.store.face_embeddings(subject_id, model_id)
        if not len(vecs) and models:
            present = tuple(sorted(set(models)))
            raise ModelMismatch(
                f"subject {subject_id} has no faces of model {model_id!r}, only of {', '.join(present)}",
                requested=model_id,
                present=present,
            )
        return vecs

    # ================================================================== re-indexing with another model
    def stage_embeddings(self, model_id: str, face_ids: Sequence[int], embeddings: npt.NDArray[np.float32]) -> int:
        """Store embeddings of ``model_id`` for existing faces, to be switched to by :meth:`switch_model`.
        Searches are not affected. Returns the rows written (an erased face is skipped)."""
        vecs = _unit_vectors(embeddings, "embedding")
        with self._write:
            return self.store.stage_embeddings(model_id, face_ids, [v.astype("<f4").tobytes() for v in vecs])

    def switch_model(self, model_id: str) -> int:
        """Make ``model_id`` every face's model, atomically: in one transaction each face of another model gets
        its staged embedding (``faces.model_id`` and ``faces.embedding`` rewritten, the old pair logged as a
        deletion, the staged rows dropped); then the old models' indexes drop those faces and the new model's
        index gains them. :class:`ReindexIncomplete` (nothing changed) if any such face has no staged
        embedding. Returns the number of faces switched."""
        with self._write:
            with storage_errors():
                conn = self.store.begin()
                try:
                    counts = self.store.reindex_counts(model_id, conn)
                    missing = counts["todo"] - counts["staged"]
                    if missing:
                        raise ReindexIncomplete(
                            f"{missing} of {counts['todo']} faces have no embedding of model {model_id!r} yet; "
                            "run `facerec reindex` to finish",
                            missing=missing,
                        )
                    old = self.store.switch_faces(conn, model_id)
                    watermarks = self.store.watermarks(conn)
                    self.store.commit()
                except BaseException:
                    self.store.rollback()
                    raise
            if not old:
                return 0
            ids = np.fromiter((f for f, _ in old), np.int64, len(old))
            vecs = self.store.embeddings_of(ids.tolist())
            with self._rw.exclusive():
                for old_model in {m for _, m in old}:
                    idx = self._indexes.get(old_model)
                    if idx is not None:
                        idx.erase([f for f, m in old if m == old_model])
                target = self._indexes.get(model_id)
                if target is None:
                    target = self._indexes[model_id] = ModelIndex(self.settings.index)
                target.add(ids, vecs)
                self._applied = watermarks
            self._changes += 2 * len(old)
            if self._erased_at is None:  # the old model's snapshot holds the old embeddings: replace it soon
                self._erased_at = time.monotonic()
        log.info("gallery: switched %d faces to model %s", len(old), model_id)
        return len(old)

    # ================================================================== search
    def search(self, probes: npt.NDArray[np.float32], *, model_id: str, top_k: int = 5) -> list[list[Candidate]]:
        if top_k < 1:
            raise ValueError("top_k must be >= 1")
        q = _unit_vectors(probes, "probe")
        with self._rw.shared():
            idx = self._indexes.get(model_id)
            if idx is None or idx.live == 0:
                present = tuple(sorted(m for m, i in self._indexes.items() if i.live))
                if present:
                    raise ModelMismatch(
                        f"no faces of model {model_id!r} in the gallery; it holds faces of {', '.join(present)}",
                        requested=model_id,
                        present=present,
                    )
                return [[] for _ in range(len(q))]
            hits = self._search_subjects(idx, q, top_k, model_id)
        pks = sorted({pk for row in hits for pk, _, _ in row})
        names = self.store.subjects_by_pk(pks)
        out: list[list[Candidate]] = []
        for row in hits:
            cands = []
            for pk, fid, dist in row:
                if pk in names:
                    sid, name = names[pk]
                    cands.append(Candidate(sid, name, fid, dist, 1.0 - dist * dist / 2.0))
            out.append(cands)
        return out

    def _rerank(
        self, q: npt.NDArray[np.float32], dist: npt.NDArray[np.float32], ids: npt.NDArray[np.int64], model_id: str
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
        """Exact L2 distances for an approximate (``sq8``) index's candidates, from the float32 embeddings in
        SQLite, each row re-sorted; a candidate SQLite no longer has (erased meanwhile) becomes ``-1``/inf."""
        found = self.store.embedding_blobs(np.unique(ids[ids >= 0]).tolist(), model_id)
        vecs = np.zeros((*ids.shape, EMBEDDING_DIM), np.float32)
        have = np.zeros(ids.shape, bool)
        for pos in zip(*np.nonzero(ids >= 0), strict=True):
            blob = found.get(int(ids[pos]))
            if blob is not None:
                vecs[pos] = np.frombuffer(blob, "<f4")
                have[pos] = True
        exact = np.sqrt(np.clip(((vecs - q[:, None, :]) ** 2).sum(axis=2), 0.0, 4.0)).astype(np.float32)
        exact = np.where(have, exact, np.inf).astype(np.float32)
        order = np.argsort(exact, axis=1, kind="stable")
        return np.take_along_axis(exact, order, axis=1), np.take_along_axis(np.where(have, ids, -1), order, axis=1)

    def _search_subjects(
        self, idx: ModelIndex, q: npt.NDArray[np.float32], top_k: int, model_id: str
    ) -> list[list[tuple[int, int, float]]]:
        """Per probe, up to ``top_k`` (subject pk, face id, distance) by best face; over-fetches faces and
        grows the fetch until ``top_k`` distinct subjects are found or every face was seen."""
        live = idx.live
        kf = min(live, max(top_k * self.settings.overfetch, 16))
        while True:
            dist, ids = idx.search(q, kf)
            if idx.approximate:
                dist, ids = self._rerank(q, dist, ids, model_id)
            subj = np.where(ids >= 0, self._subject_of[np.clip(ids, 0, None)], -1)
            rows: list[list[tuple[int, int, float]]] = []
            short = False
            for r in range(len(q)):
                ok = subj[r] >= 0
                s, f, d = subj[r][ok], ids[r][ok], dist[r][ok]
                _, first = np.unique(s, return_index=True)
                first.sort()
                first = first[:top_k]
                if len(first) < top_k:
                    short = True
                rows.append([(int(s[j]), int(f[j]), float(d[j])) for j in first])
            if not short or kf >= live:
                return rows
            kf = min(live, kf * 4)

    # ================================================================== stats, snapshots, maintenance
    def face_count(self, model_id: str) -> int:
        """Live faces of ``model_id``, from the in-memory index (``stats()`` counts in SQLite: ~40 ms at 1M)."""
        with self._rw.shared():
            index = self._indexes.get(model_id)
            return index.live if index is not None else 0

    def subject_count(self) -> int:
        return self.store.count_subjects()

    def stats(self) -> GalleryStats:
        by_model = self.store.faces_by_model()
        with self._rw.shared():
            indexes = {
                m: IndexInfo(
                    kind=i.kind,
                    live=i.live,
                    hnsw=i.main.live if i.main is not None else 0,
                    flat=sum(s.live for s in i.segments if s.kind == "flat"),
                    tombstones=i.tombstones,
                    building=i.building,
                )
                for m, i in self._indexes.items()
            }
            applied = self._applied
        return GalleryStats(
            subjects=self.store.count_subjects(),
            faces=sum(by_model.values()),
            faces_by_model=by_model,
            indexes=indexes,
            snapshots=dict(self._snap_info),
            last_change=applied,
        )

    def save_snapshot(self) -> None:
        with self._write:
            self._save_locked()

    def _save_locked(self) -> None:
        try:
            self.store.checkpoint()
        except Exception as e:
            log.warning("gallery: WAL checkpoint failed: %s", e)
        with self._rw.shared():
            max_face, max_del = self._applied
            saved: set[Path] = set()
            for model_id, idx in self._indexes.items():
                path = snapshot.snapshot_path(self.data_dir, model_id)
                if idx.live == 0 and idx.tombstones == 0 and not any(s.ntotal for s in idx.segments):
                    continue
                header = snapshot.SnapshotHeader(
                    self.store.gallery_uuid, SCHEMA_VERSION, model_id, max_face, max_del, time.time()
                )
                snapshot.save(path, idx, header)
                saved.add(path)
                self._snap_info[model_id] = SnapshotInfo(str(path), max_face, max_del, header.saved_at)
        snap_dir = self.data_dir / snapshot.SNAP_DIR
        if snap_dir.is_dir():  # stale snapshots (models with no faces left) may hold erased embeddings
            for p in snap_dir.glob("*.snap"):
                if p not in saved:
                    p.unlink()
                    self._snap_info = {m: s for m, s in self._snap_info.items() if s.path != str(p)}
        if max_del:
            self.store.prune_deletions(max_del)
        self._changes = 0
        self._erased_at = None
        self._last_snapshot = time.monotonic()

    def maintain(self, *, force_snapshot: bool = False) -> None:
        """One maintenance pass: HNSW conversion/compaction, merging flat adds into HNSW, and a snapshot
        when due. Called by the background thread; call it directly when ``auto_maintain`` is False."""
        with self._maint:
            for model_id in list(self._indexes):
                if self._stop.is_set():
                    return
                idx = self._indexes[model_id]
                if idx.needs_rebuild():
                    self._rebuild_hnsw(model_id, idx)
                if idx.needs_merge():
                    more = True
                    while more and not self._stop.is_set():
                        with self._write, self._rw.exclusive():
                            more = idx.merge_step()
                        self._changes += 1
            s = self.settings
            due = (
                force_snapshot
                or self._changes >= s.snapshot_every_changes
                or (self._changes and time.monotonic() - self._last_snapshot >= s.snapshot_interval_s)
                or (self._erased_at is not None and time.monotonic() - self._erased_at >= s.erasure_snapshot_delay_s)
            )
            retry_at = self._snapshot_failed_at + s.snapshot_retry_s
            if due and not self._stop.is_set() and (force_snapshot or time.monotonic() >= retry_at):
                try:
                    self.save_snapshot()
                except Exception as e:  # disk full / read-only: the index is a cache, SQLite still has it all
                    self._snapshot_failed_at = time.monotonic()
                    log.error("gallery: saving the index snapshot failed (retry in %.0f s): %s", s.snapshot_retry_s, e)
                else:
                    self._snapshot_failed_at = -float("inf")

    def _rebuild_hnsw(self, model_id: str, idx: ModelIndex) -> None:
        with self._write, self._rw.exclusive():
            frozen, tombs = idx.begin_rebuild()
        stage = f"hnsw {model_id}"

        def progress(done: int, total: int) -> None:
            if self._stop.is_set():
                raise _Cancelled
            if self._progress:
                self._progress(stage, done, total)

        t0 = time.perf_counter()
        try:
            built = build_hnsw(frozen, tombs, self.settings.index, progress)
        except BaseException:
            with self._write, self._rw.exclusive():
                idx.abort_rebuild()
            if self._stop.is_set():
                return
            raise
        with self._write, self._rw.exclusive():
            idx.finish_rebuild(frozen, built)
        self._changes += self.settings.snapshot_every_changes  # a fresh HNSW is worth saving soon
        log.info("gallery: built HNSW for %s (%d faces) in %.1f s", model_id, built.live, time.perf_counter() - t0)

    def compact(self) -> None:
        """Rebuild every HNSW index now without its tombstones (maintenance does it at ``compact_ratio``)."""
        with self._maint:
            for model_id, idx in list(self._indexes.items()):
                if idx.main is not None and not idx.building:
                    self._rebuild_hnsw(model_id, idx)

    def set_ef_search(self, ef: int) -> None:
        """Change HNSW ``efSearch`` for every model (benchmarks)."""
        with self._rw.exclusive():
            for idx in self._indexes.values():
                idx.set_ef_search(ef)

    def index_ids(self, model_id: str) -> npt.NDArray[np.int64]:
        """Face ids the index holds for ``model_id`` (tests and consistency checks)."""
        with self._rw.shared():
            idx = self._indexes.get(model_id)
            return np.sort(idx.live_ids()) if idx is not None else np.zeros(0, np.int64)

    def _maintenance_loop(self) -> None:
        while not self._stop.wait(self.settings.maintenance_tick_s):
            try:
                self.maintain()
            except Exception:
                log.exception("gallery: maintenance failed")

    def close(self) -> None:
        """Stop maintenance, save the snapshot if the index changed since the last one, release the lock."""
        if self._closed:
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        try:
            if self._changes or self._erased_at is not None:
                self.save_snapshot()
        except Exception as e:  # disk full / read-only: the next open replays or rebuilds from SQLite
            log.error("gallery: saving the index snapshot at close failed: %s", e)
        finally:
            self.store.close()
            self._lock.release()
            self._closed = True

    def __enter__(self) -> LocalGallery:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def default_data_dir() -> Path:
    """``$FACEREC_DATA`` or ``./data``: where the service keeps the gallery."""
    return Path(os.environ.get("FACEREC_DATA") or "data")


_DEFAULT_INDEX = IndexParams()
_DEFAULT_SETTINGS = GallerySettings()


def open_gallery(
    data_dir: Path,
    *,
    hnsw_threshold: int = _DEFAULT_INDEX.hnsw_threshold,
    hnsw_m: int = _DEFAULT_INDEX.hnsw_m,
    ef_construction: int = _DEFAULT_INDEX.ef_construction,
    ef_search: int = _DEFAULT_INDEX.ef_search,
    hnsw_storage: str = _DEFAULT_INDEX.hnsw_storage,
    snapshot_every_changes: int = _DEFAULT_SETTINGS.snapshot_every_changes,
    snapshot_interval_s: float = _DEFAULT_SETTINGS.snapshot_interval_s,
    auto_maintain: bool = True,
    progress: ProgressFn | None = None,
) -> LocalGallery:
    """Open (creating if needed) the gallery in ``data_dir``; raises :class:`GalleryLocked` if another
    process has it open. ``progress(stage, done, total)`` reports index rebuilds. ``hnsw_storage``: ``fp16``
    (default), ``sq8`` or ``float32`` vectors in HNSW (an HNSW snapshot of another storage is converted at open)."""
    params = IndexParams(
        hnsw_threshold=hnsw_threshold,
        hnsw_m=hnsw_m,
        ef_construction=ef_construction,
        ef_search=ef_search,
        hnsw_storage=hnsw_storage,
    )
    settings = GallerySettings(
        index=params,
        snapshot_every_changes=snapshot_every_changes,
        snapshot_interval_s=snapshot_interval_s,
        auto_maintain=auto_maintain,
    )
    return LocalGallery(Path(data_dir), settings, progress)
