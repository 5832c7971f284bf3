"""The search index of the photo library: one FAISS :class:`~service.gallery.index.ModelIndex` per model id over
every observation, keyed by observation id (the gallery's index: flat segments, an HNSW main past
``IndexParams.hnsw_threshold`` faces, tombstones on erase).

The store (``photos.sqlite3``) is the truth; the index is a cache of it, persisted as a snapshot per model
(``<data>/photos-index/<model>.snap``, the gallery's atomic, checksummed format) so that a restart does not
rebuild the HNSW graph. On first use the snapshot is loaded and **reconciled with the store**: ids the store
no longer has are erased, ids the snapshot lacks are added (a crash between a store write and a snapshot, or
a stale snapshot, costs one read of the ids and embeddings, never a wrong result). A snapshot that fails its
checks is ignored and the index is built from the store. Erasing faces deletes the snapshot file at once (it
may hold their embeddings); :meth:`PhotoIndex.maintain` writes a fresh one.

HNSW is built by :meth:`PhotoIndex.maintain` (the library's background task, or a caller) outside the write
lock: searches go on over the frozen segments meanwhile, as in the gallery. Distances: L2 in [0, 2].
Thread-safety: searches share a readers-writer lock, mutations take it exclusively; :meth:`maintain` is
serialised by its own lock.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

from service.gallery import snapshot
from service.gallery.errors import SnapshotInvalid
from service.gallery.hnsw import build_hnsw
from service.gallery.index import ModelIndex
from service.gallery.rwlock import RWLock
from service.gallery.segment import IndexParams
from service.photos.base import PhotoStore

log = logging.getLogger("facerec.photos")

SNAP_DIR = "photos-index"
SNAP_OWNER = "photo-library"
"""The ``gallery_uuid`` field of a photo index snapshot (it is checked against nothing: reconciliation with the
store is what makes a snapshot trustworthy)."""


class PhotoIndex:
    """The per-model search indexes of one photo store; ``data_dir`` None: not persisted (built from the store
    on first use in every process)."""

    def __init__(self, store: PhotoStore, params: IndexParams, data_dir: Path | None = None) -> None:
        self.store = store
        self.params = params
        self.snap_dir = data_dir / SNAP_DIR if data_dir is not None else None
        self._models: dict[str, ModelIndex] = {}
        self._rw = RWLock()
        self._load_lock = threading.Lock()
        self._maint = threading.Lock()
        self._dirty: set[str] = set()
        """Models changed since their snapshot was written."""
        self._synced: dict[str, int] = {}
        """The store's change counter when each model's index last matched the store."""
        self.cancel = threading.Event()
        """Set: an HNSW build in progress stops (closing); the flat segments stay in use."""
        self.on_due: Callable[[], None] | None = None
        """Called (without locks) when an add makes :meth:`maintain` due: HNSW to build or adds to merge."""

    # ------------------------------------------------------------------ loading
    def _path(self, model_id: str) -> Path | None:
        if self.snap_dir is None:
            return None
        return self.snap_dir / snapshot.snapshot_path(Path("."), model_id).name

    def model(self, model_id: str) -> ModelIndex:
        """The index of ``model_id``: from its snapshot reconciled with the store, or built from the store; then
        brought up to date whenever the store's change counter moved (another process sharing the store, e.g. a
        replica on the same database, added or erased faces)."""
        changes = self.store.change_count()
        idx = self._models.get(model_id)
        if idx is not None and self._synced.get(model_id) == changes:
            return idx
        with self._load_lock:
            idx = self._models.get(model_id)
            if idx is None:
                idx = self._load(model_id)
                with self._rw.exclusive():
                    self._models[model_id] = idx
                if idx.needs_rebuild() and self.on_due is not None:
                    self.on_due()
            elif self._synced.get(model_id, -1) < changes:
                self._catch_up(model_id, idx)
            self._synced[model_id] = max(self._synced.get(model_id, -1), changes)
        return idx

    def _catch_up(self, model_id: str, idx: ModelIndex) -> None:
        """Add the faces stored after the index's newest one. Then reconcile with the whole store when the index
        holds fewer faces than the store had before that read (a face committed out of id order by another
        process, below the newest id already seen) or more than it has after it (erased through another
        process)."""
        before = self.store.observation_count(model_id)
        ids, emb = self.store.all_embeddings(model_id, after=idx.max_id)
        with self._rw.exclusive():
            if len(ids):
                idx.add(ids, emb)
                self._dirty.add(model_id)
        if idx.live < before or idx.live > self.store.observation_count(model_id):
            ids, emb = self.store.all_embeddings(model_id)
            with self._rw.exclusive():
                erased, _ = reconcile(idx, ids, emb)
                self._dirty.add(model_id)
            if erased:  # erased through another process: this process's snapshot may hold their embeddings
                self._drop_snapshot(model_id)

    def _load(self, model_id: str) -> ModelIndex:
        start = time.perf_counter()
        ids, emb = self.store.all_embeddings(model_id)
        path = self._path(model_id)
        idx: ModelIndex | None = None
        if path is not None and path.exists():
            try:
                idx, _ = snapshot.load(path, self.params)
            except SnapshotInvalid as e:
                log.warning("photo library: ignoring the index snapshot (%s); building from the store", e)
        if idx is None:
            idx = ModelIndex(self.params)
            idx.add(ids, emb)
            self._dirty.add(model_id)
            how = "built from the store"
        else:
            erased, added = reconcile(idx, ids, emb)
            if erased or added or idx.convert_storage():
                self._dirty.add(model_id)
            if erased:  # faces erased since the snapshot was written: it holds their embeddings
                self._drop_snapshot(model_id)
            how = f"loaded from its snapshot ({erased} erased, {added} added to match the store)"
        seconds = time.perf_counter() - start
        log.info("photo library: index of %s (%d faces) %s in %.2f s", model_id, idx.live, how, seconds)
        return idx

    # ------------------------------------------------------------------ use
    def search(
        self, probes: npt.NDArray[np.float32], *, model_id: str, k: int
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
        """``k`` nearest indexed faces per probe row: L2 distances ascending and observation ids (-1 = none)."""
        idx = self.model(model_id)
        with self._rw.shared():
            return idx.search(np.ascontiguousarray(probes, np.float32), k)

    def add(self, model_id: str, ids: npt.NDArray[np.int64], vectors: npt.NDArray[np.float32]) -> None:
        """Add faces this process has just stored (their vectors are at hand: a loaded index takes them without
        reading the store; other processes' changes are caught up by the next :meth:`model`)."""
        idx = self._models.get(model_id) or self.model(model_id)
        with self._rw.exclusive():
            fresh = ids > idx.max_id  # a catch-up (:meth:`model`) may have added them already
            idx.add(ids[fresh], vectors[fresh])
            self._dirty.add(model_id)
            due = idx.needs_rebuild() or idx.needs_merge()
        if due and self.on_due is not None:
            self.on_due()

    def erase(self, by_model: dict[str, list[int]]) -> None:
        """Erase observation ids per model id; their snapshot file goes at once (it may hold their embeddings).
        A model whose index is loading meanwhile is waited for (its load may have read the store before)."""
        with self._load_lock, self._rw.exclusive():
            for model_id, ids in by_model.items():
                if model_id in self._models:
                    self._models[model_id].erase(ids)
                    self._dirty.add(model_id)
        for model_id in by_model:
            self._drop_snapshot(model_id)

    def _drop_snapshot(self, model_id: str) -> None:
        """Delete the model's snapshot file (it may hold erased faces' embeddings); the next save writes it anew."""
        path = self._path(model_id)
        if path is not None:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    def kind(self, model_id: str) -> str:
        """``flat`` (exact) or ``hnsw`` (approximate main)."""
        return self.model(model_id).kind

    # ------------------------------------------------------------------ maintenance
    def maintain(self, *, save: bool = True) -> None:
        """Catch each loaded model up with the store (another process's adds and erasures; a snapshot that may
        hold faces erased elsewhere is deleted), build HNSW where a model crossed ``hnsw_threshold`` (or compact
        one with too many tombstones), merge flat adds into it, then (``save``) write the snapshots of the models
        it rebuilt or merged. Other changes are saved on close; a snapshot that misses some is reconciled with
        the store at load."""
        worked: set[str] = set()
        with self._maint:
            for model_id in list(self._models):  # catch up with other processes' writes: drops a snapshot that
                self.model(model_id)  # holds faces they erased (replicas sharing a database)
            for model_id, idx in list(self._models.items()):
                if self.cancel.is_set():
                    return
                if idx.needs_rebuild():
                    self._rebuild(model_id, idx)
                    worked.add(model_id)
                more = idx.needs_merge()
                while more:
                    with self._rw.exclusive():
                        more = idx.merge_step()
                        self._dirty.add(model_id)
                    worked.add(model_id)
            if save and worked:
                self.save(worked)

    def _rebuild(self, model_id: str, idx: ModelIndex) -> None:
        start = time.perf_counter()
        with self._rw.exclusive():
            frozen, tombs = idx.begin_rebuild()

        def progress(done: int, total: int) -> None:
            if self.cancel.is_set():
                raise _Cancelled

        try:
            built = build_hnsw(frozen, tombs, self.params, progress)
        except BaseException as e:
            with self._rw.exclusive():
                idx.abort_rebuild()
            if isinstance(e, _Cancelled):
                return
            raise
        with self._rw.exclusive():
            idx.finish_rebuild(frozen, built)
            self._dirty.add(model_id)
        seconds = time.perf_counter() - start
        log.info("photo library: built HNSW for %s (%d faces) in %.1f s", model_id, built.live, seconds)

    def save(self, models: set[str] | None = None) -> None:
        """Write the snapshot of every model (of ``models``, default all) changed since its last one (atomic;
        failures are logged: the index is a cache)."""
        for model_id in sorted(self._dirty if models is None else self._dirty & models):
            path = self._path(model_id)
            idx = self._models.get(model_id)
            if path is None or idx is None:
                continue
            with self._rw.shared():
                if idx.building:
                    continue
                self._dirty.discard(model_id)
                header = snapshot.SnapshotHeader(SNAP_OWNER, 1, model_id, idx.max_id, 0, time.time())
                try:
                    snapshot.save(path, idx, header)
                except OSError as e:
                    self._dirty.add(model_id)
                    log.error("photo library: saving the index snapshot of %s failed: %s", model_id, e)


class _Cancelled(Exception):
    """An HNSW build stopped because the library is closing."""


def reconcile(idx: ModelIndex, ids: npt.NDArray[np.int64], emb: npt.NDArray[np.float32]) -> tuple[int, int]:
    """Make ``idx`` hold exactly the observations ``ids`` (with embeddings ``emb``, as the store has them):
    erase the others, add the missing. Returns (erased, added)."""
    live = idx.live_ids()
    gone = np.setdiff1d(live, ids, assume_unique=True)
    missing = ~np.isin(ids, live)
    erased = idx.erase(gone) if len(gone) else 0
    if missing.any():
        idx.add(ids[missing], emb[missing])
    return erased, int(missing.sum())


def group_by_model(pairs: Sequence[tuple[str, int]]) -> dict[str, list[int]]:
    """``[(model_id, observation id)]`` -> ids per model id."""
    out: dict[str, list[int]] = {}
    for model_id, i in pairs:
        out.setdefault(model_id, []).append(i)
    return out
