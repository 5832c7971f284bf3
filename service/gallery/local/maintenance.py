"""The embedded gallery's background maintenance: HNSW conversion and compaction, merging flat adds into HNSW,
and index snapshots (every ``snapshot_every_changes`` changes or ``snapshot_interval_s`` seconds, soon after any
erasure, and at close). A failed snapshot (disk full, read-only) is logged and retried after
``snapshot_retry_s``: the index is a cache and SQLite still has everything.

Locks, always taken in this order: ``maint`` (one maintenance at a time) -> the gallery's ``write`` (one
writer) -> ``cache.rw`` (exclusive for index mutation). HNSW builds run from frozen copies outside the locks.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

from service.gallery import snapshot
from service.gallery.hnsw import build_hnsw
from service.gallery.index import ModelIndex
from service.gallery.local.cache import IndexCache
from service.gallery.local.recovery import ProgressFn
from service.gallery.local.settings import GallerySettings
from service.gallery.sqlite import SCHEMA_VERSION, SQLiteStore
from service.gallery.types import SnapshotInfo

log = logging.getLogger("facerec.gallery")


class _Cancelled(Exception):
    pass


class Maintenance:
    """Maintenance of one gallery's cache; :meth:`start` runs :meth:`run` every ``maintenance_tick_s``."""

    def __init__(
        self,
        store: SQLiteStore,
        cache: IndexCache,
        data_dir: Path,
        settings: GallerySettings,
        write_lock: threading.Lock,
        snapshots: dict[str, SnapshotInfo],
        progress: ProgressFn | None = None,
    ) -> None:
        self.store = store
        self.cache = cache
        self.data_dir = data_dir
        self.settings = settings
        self.write = write_lock
        self.snapshots = snapshots
        """Per model, the snapshot the index was last loaded from or saved to."""
        self.progress = progress
        self.maint = threading.Lock()
        self.stopping = threading.Event()
        self._last_snapshot = time.monotonic()
        self._snapshot_failed_at = -float("inf")
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="gallery-maint", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread (an HNSW build in progress is cancelled) and wait for it."""
        self.stopping.set()
        if self._thread is not None:
            self._thread.join()

    def _loop(self) -> None:
        while not self.stopping.wait(self.settings.maintenance_tick_s):
            try:
                self.run()
            except Exception:
                log.exception("gallery: maintenance failed")

    # ---------------------------------------------------------------- one pass
    def run(self, *, force_snapshot: bool = False) -> None:
        """One pass: HNSW conversion/compaction, merging flat adds into HNSW, and a snapshot when due."""
        with self.maint:
            for model_id in list(self.cache.models):
                if self.stopping.is_set():
                    return
                idx = self.cache.models[model_id]
                if idx.needs_rebuild():
                    self._rebuild_hnsw(model_id, idx)
                if idx.needs_merge():
                    more = True
                    while more and not self.stopping.is_set():
                        with self.write, self.cache.rw.exclusive():
                            more = idx.merge_step()
                        self.cache.unsaved += 1
                if idx.needs_conversion():  # a main that grew to sq8_from faces: once, ~3 s at 1M
                    with self.write, self.cache.rw.exclusive():
                        converted = idx.convert_storage()
                    if converted:
                        log.info("gallery: converted the %s HNSW to %s storage", model_id, converted)
                        self.cache.unsaved += self.settings.snapshot_every_changes
            s, now, cache = self.settings, time.monotonic(), self.cache
            due = (
                force_snapshot
                or cache.unsaved >= s.snapshot_every_changes
                or (cache.unsaved and now - self._last_snapshot >= s.snapshot_interval_s)
                or (cache.erased_at is not None and now - cache.erased_at >= s.erasure_snapshot_delay_s)
            )
            retry_at = self._snapshot_failed_at + s.snapshot_retry_s
            if due and not self.stopping.is_set() and (force_snapshot or now >= retry_at):
                try:
                    self.save_snapshot()
                except Exception as e:  # disk full / read-only: the index is a cache, SQLite still has it all
                    self._snapshot_failed_at = time.monotonic()
                    log.error("gallery: saving the index snapshot failed (retry in %.0f s): %s", s.snapshot_retry_s, e)
                else:
                    self._snapshot_failed_at = -float("inf")

    def compact(self) -> None:
        """Rebuild every HNSW index now without its tombstones."""
        with self.maint:
            for model_id, idx in list(self.cache.models.items()):
                if idx.main is not None and not idx.building:
                    self._rebuild_hnsw(model_id, idx)

    def _rebuild_hnsw(self, model_id: str, idx: ModelIndex) -> None:
        with self.write, self.cache.rw.exclusive():
            frozen, tombs = idx.begin_rebuild()
        stage = f"hnsw {model_id}"

        def progress(done: int, total: int) -> None:
            if self.stopping.is_set():
                raise _Cancelled
            if self.progress:
                self.progress(stage, done, total)

        t0 = time.perf_counter()
        try:
            built = build_hnsw(frozen, tombs, self.settings.index, progress)
        except BaseException:
            with self.write, self.cache.rw.exclusive():
                idx.abort_rebuild()
            if self.stopping.is_set():
                return
            raise
        with self.write, self.cache.rw.exclusive():
            idx.finish_rebuild(frozen, built)
        self.cache.unsaved += self.settings.snapshot_every_changes  # a fresh HNSW is worth saving soon
        log.info("gallery: built HNSW for %s (%d faces) in %.1f s", model_id, built.live, time.perf_counter() - t0)

    # ---------------------------------------------------------------- snapshots
    def save_snapshot(self) -> None:
        """Checkpoint the WAL, save every model's index, drop stale snapshots and the deletions they hold."""
        with self.write:
            self._save_locked()

    def _save_locked(self) -> None:
        try:
            self.store.checkpoint()
        except Exception as e:
            log.warning("gallery: WAL checkpoint failed: %s", e)
        cache = self.cache
        with cache.rw.shared():
            max_face, max_del = cache.applied
            saved: set[Path] = set()
            for model_id, idx in cache.models.items():
                path = snapshot.snapshot_path(self.data_dir, model_id)
                if idx.live == 0 and idx.tombstones == 0 and not any(s.ntotal for s in idx.segments):
                    continue
                header = snapshot.SnapshotHeader(
                    self.store.gallery_uuid, SCHEMA_VERSION, model_id, max_face, max_del, time.time()
                )
                snapshot.save(path, idx, header)
                saved.add(path)
                self.snapshots[model_id] = SnapshotInfo(str(path), max_face, max_del, header.saved_at)
        snap_dir = self.data_dir / snapshot.SNAP_DIR
        if snap_dir.is_dir():  # stale snapshots (models with no faces left) may hold erased embeddings
            for p in snap_dir.glob("*.snap"):
                if p not in saved:
                    p.unlink()
                    for m in [m for m, s in self.snapshots.items() if s.path == str(p)]:
                        del self.snapshots[m]
        if max_del:
            self.store.prune_deletions(max_del)
        cache.unsaved = 0
        cache.erased_at = None
        self._last_snapshot = time.monotonic()
