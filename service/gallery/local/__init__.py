"""The embedded gallery: SQLite (truth) + FAISS (cache) in one data dir owned by one process.

Modules: ``gallery`` (:class:`LocalGallery`: the public methods and the write path), ``cache`` (the in-memory
indexes), ``recovery`` (open: snapshot, replay, rebuild), ``search`` (top-k subjects, re-ranking),
``maintenance`` (HNSW builds, snapshots), ``staging`` (re-index staging while a server holds the data dir),
``settings`` (tunables). The SQL lives in :mod:`service.gallery.sqlite`.
"""

from __future__ import annotations

import os
from pathlib import Path

from service.gallery.local.gallery import LocalGallery
from service.gallery.local.recovery import ProgressFn
from service.gallery.local.settings import GallerySettings
from service.gallery.local.staging import SideStaging
from service.gallery.segment import IndexParams

__all__ = ["GallerySettings", "LocalGallery", "ProgressFn", "SideStaging", "default_data_dir", "open_gallery"]


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
