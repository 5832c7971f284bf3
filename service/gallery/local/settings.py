"""Tunables of the embedded gallery (:class:`GallerySettings`); ``index`` holds the FAISS ones."""

from __future__ import annotations

from dataclasses import dataclass, field

from service.gallery.segment import IndexParams


@dataclass(frozen=True, slots=True)
class GallerySettings:
    """Snapshot policy (every ``snapshot_every_changes`` changes or ``snapshot_interval_s`` seconds with changes,
    ``erasure_snapshot_delay_s`` after an erasure), the maintenance thread and the search over-fetch factor."""

    index: IndexParams = field(default_factory=IndexParams)
    snapshot_every_changes: int = 10_000
    snapshot_interval_s: float = 300.0
    erasure_snapshot_delay_s: float = 5.0
    auto_maintain: bool = True
    maintenance_tick_s: float = 1.0
    snapshot_retry_s: float = 30.0
    """After a failed snapshot save (disk full, read-only), wait this long before the next attempt."""
    overfetch: int = 8
