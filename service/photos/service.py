"""Opening the photo library from the settings, and its background task (search index, retention,
re-clustering).

``open_library(settings)`` returns None when ``FACEREC_PHOTO_LIBRARY`` is off (the endpoints then answer 403
``photo_library_disabled``). The background thread keeps the search index up (HNSW past
:data:`PHOTO_HNSW_THRESHOLD` faces, merges, snapshots; checked every :data:`INDEX_CHECK_S` seconds and as soon
as an add makes it due) and every ``FACEREC_PHOTO_RECLUSTER_INTERVAL_S`` seconds (0 = never) erases unnamed
faces past the retention and, when anything changed since its last run, re-clusters the unnamed faces of
every model. Closing stops and joins it before the index is saved and the store closes.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from service.config import Settings
from service.gallery.errors import log_background_failure
from service.gallery.segment import IndexParams
from service.photos.base import PhotoStore
from service.photos.cluster import ClusterParams
from service.photos.clusters import recluster_all
from service.photos.library import PhotoLibrary
from service.photos.sqlite import DB_NAME, SQLitePhotoStore

log = logging.getLogger("facerec.photos")

PHOTO_HNSW_THRESHOLD = 20_000
"""Faces of one model past which the photo search index gets an HNSW main (below, exact flat search takes
~1 ms; docs/PHOTOS.md has the figures at 100k)."""
INDEX_CHECK_S = 60.0


class Maintenance:
    """The background loop of one library: index upkeep always, re-clustering every ``interval_s`` (0 = on
    demand only)."""

    def __init__(self, lib: PhotoLibrary, interval_s: float) -> None:
        self.lib = lib
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._last = -1
        lib.index.on_due = self._wake.set
        self._thread = threading.Thread(target=self._loop, name="photo-maintenance", daemon=True)
        self._thread.start()

    def run_once(self) -> None:
        """Retention, then a re-clustering of each model's unnamed faces if anything changed since last time; on
        one process at a time of those sharing the store (another's turn: nothing)."""
        with self.lib.store.maintenance_turn() as mine:
            if mine:
                self._run()

    def _run(self) -> None:
        self.lib.enforce_retention()
        changes = self.lib.store.change_count()
        if changes == self._last:
            return
        recluster_all(self.lib)
        # the count read *before*: a change made while clustering ran is seen next time (the run's own writes
        # also cost one more run, which then changes nothing)
        self._last = changes

    def _loop(self) -> None:
        due = time.monotonic() + self.interval_s if self.interval_s > 0 else math.inf
        while not self._stop.is_set():
            self._wake.wait(min(INDEX_CHECK_S, max(0.0, due - time.monotonic())))
            self._wake.clear()
            if self._stop.is_set():
                return
            for job in (self.lib.index.maintain, self.run_once if time.monotonic() >= due else None):
                if job is None:
                    continue
                try:
                    job()
                except Exception as e:  # a failed run is logged and retried at the next wake-up
                    log_background_failure(log, "photo library: background maintenance", e)
            if time.monotonic() >= due:
                due = time.monotonic() + self.interval_s

    def stop(self) -> None:
        self._stop.set()
        self.lib.index.cancel.set()
        self._wake.set()
        self._thread.join()


def open_library(settings: Settings, store: PhotoStore | None = None) -> PhotoLibrary | None:
    """The library on ``store`` (default: ``settings.data``'s SQLite file) with its background task, or None when
    the library is off."""
    if not settings.photo_library:
        return None
    lib = PhotoLibrary(
        store or SQLitePhotoStore(settings.data),
        cluster_params=ClusterParams(threshold=settings.photo_link_cap),
        link_max_fir=settings.photo_cluster_max_fir or None,
        retention_days=settings.photo_unnamed_retention_days,
        index_params=IndexParams(
            hnsw_threshold=PHOTO_HNSW_THRESHOLD,
            hnsw_storage=settings.hnsw_storage,
            ef_search=settings.hnsw_ef_search,
        ),
        index_dir=settings.data,
        enrol_gate=settings.analyzer_config().quality,
    )
    lib.enforce_retention()
    lib.maintenance = Maintenance(lib, settings.photo_recluster_interval_s)
    return lib


@contextmanager
def holding_photo_faces(
    settings: Settings, library: PhotoLibrary | None, shared: PhotoStore | None = None
) -> Iterator[PhotoLibrary | None]:
    """The library holding subjects' photo faces, for an erasure or an export: ``library`` (the open one) when
    the library is on; when it is off, the faces it kept from when it was on: its store alone (``shared``, the
    database's, or the data dir's file), with no search index loaded and no background task (an erasure still
    removes the erased faces' index snapshots), closed on exit unless ``shared``; None when no photo was ever
    indexed. Turning the library off must not make an erasure skip, or an export miss, a person's photo faces."""
    if library is not None:
        yield library
        return
    if shared is not None:
        yield PhotoLibrary(shared, index_dir=settings.data)  # the backend owns the database's store
        return
    if not (settings.data / DB_NAME).is_file():
        yield None
        return
    dormant = PhotoLibrary(SQLitePhotoStore(settings.data), index_dir=settings.data)
    try:
        yield dormant
    finally:
        dormant.close()


def close_library(lib: PhotoLibrary | None) -> None:
    if lib is not None:
        if lib.maintenance is not None:
            lib.maintenance.stop()
        lib.close()
