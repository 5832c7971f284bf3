"""The embedded gallery: SQLite (truth) + FAISS (cache) in one data dir owned by one process.

Modules: ``gallery`` (:class:`LocalGallery`: the public methods and the write path), ``cache`` (the in-memory
indexes), ``recovery`` (open: snapshot, replay, rebuild), ``search`` (top-k subjects, re-ranking),
``maintenance`` (HNSW builds, snapshots), ``staging`` (re-index staging while a server holds the data dir),
``settings`` (tunables). The SQL lives in :mod:`service.gallery.sqlite`.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from service.gallery.local.gallery import LocalGallery
from service.gallery.local.recovery import ProgressFn
from service.gallery.local.settings import GallerySettings
from service.gallery.local.staging import SideStaging

__all__ = ["GallerySettings", "LocalGallery", "ProgressFn", "SideStaging", "open_gallery"]


def open_gallery(
    data_dir: Path,
    settings: GallerySettings | None = None,
    *,
    auto_maintain: bool = True,
    progress: ProgressFn | None = None,
) -> LocalGallery:
    """Open (creating if needed) the gallery in ``data_dir`` with ``settings`` (defaults: :class:`GallerySettings`;
    ``auto_maintain=False`` overrides theirs: no background thread); raises :class:`GalleryLocked` if another
    process has it open. ``progress(stage, done, total)`` reports index rebuilds."""
    chosen = settings or GallerySettings()
    if not auto_maintain and chosen.auto_maintain:
        chosen = replace(chosen, auto_maintain=False)
    return LocalGallery(Path(data_dir), chosen, progress)
