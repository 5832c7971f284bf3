"""The FAISS index of one model: a cache of SQLite, keyed by integer face id (``IndexIDMap``).

Layout: a list of *segments*. At most one is HNSW (the approximate "main", built in bulk); the others are
exact flat indexes (``IndexIDMap(IndexFlatL2)``) holding recent adds. A small gallery is a single flat
segment: exact search. Past ``hnsw_threshold`` live faces a rebuild makes an HNSW main from every segment
(the flat segments are frozen meanwhile and new adds go to a fresh flat one), and later flat adds are merged
into the main in small chunks once they reach ``merge_batch``.

Deletion: a face in the active flat segment is removed outright; a face in HNSW (which cannot remove) or in a
frozen segment becomes a *tombstone*: its stored vector is overwritten at once with a far constant point
(:data:`service.gallery.segment.TOMBSTONE_FILL`; so neither memory nor the next snapshot keeps the embedding)
and its id is filtered out of every result (searches over-fetch and retry until they have ``k`` live results).
When tombstones exceed ``compact_ratio`` of the main, it is rebuilt.

Distances: FAISS L2 indexes return squared L2; :meth:`ModelIndex.search` returns L2 in [0, 2].
Thread-safety: none here; the gallery holds a readers-writer lock around these calls.
"""

from __future__ import annotations

from collections.abc import Sequence

import faiss
import numpy as np
import numpy.typing as npt

from service.gallery.hnsw import convert_hnsw_storage
from service.gallery.segment import FLAT, HNSW, IndexParams, Segment, as_ids

__all__ = ["ModelIndex"]


class ModelIndex:
    """All faces of one model id. See the module docstring for the layout."""

    def __init__(self, params: IndexParams, segments: list[Segment] | None = None) -> None:
        self.params = params
        self.segments: list[Segment] = segments if segments is not None else [Segment.new_flat()]
        self.building = False
        self._pending: set[int] = set()
        self._max_id: int | None = None
        """Highest face id added (None: not computed yet from the segments given)."""

    # ------------------------------------------------------------------ state
    @property
    def main(self) -> Segment | None:
        return self.segments[0] if self.segments and self.segments[0].kind == HNSW else None

    @property
    def kind(self) -> str:
        return HNSW if self.main is not None else FLAT

    @property
    def live(self) -> int:
        return sum(s.live for s in self.segments)

    @property
    def tombstones(self) -> int:
        return sum(len(s.tombstones) for s in self.segments)

    @property
    def approximate(self) -> bool:
        """True when search distances are approximate (an ``sq8`` main): re-rank the candidates exactly."""
        main = self.main
        return main is not None and main.storage == "sq8"

    def live_ids(self) -> npt.NDArray[np.int64]:
        parts = [s.live_ids() for s in self.segments]
        return np.concatenate(parts) if parts else np.zeros(0, np.int64)

    @property
    def max_id(self) -> int:
        """The highest face id this index has held (0: none): ids are never reused, so a face with a larger id
        is new to it. Erasures leave it; one scan of the segments the first time, O(1) after."""
        if self._max_id is None:
            live = self.live_ids()
            self._max_id = int(live.max()) if len(live) else 0
        return self._max_id

    def _active(self) -> Segment:
        last = self.segments[-1] if self.segments else None
        if last is None or last.kind != FLAT or last.frozen:
            last = Segment.new_flat()
            self.segments.append(last)
        return last

    # ------------------------------------------------------------------ mutation (exclusive lock)
    def add(self, ids: npt.NDArray[np.int64], vectors: npt.NDArray[np.float32]) -> None:
        """Add unit vectors (n, 128) under face ids (n,) to the active flat segment."""
        if len(ids):
            self._active().index.add_with_ids(np.ascontiguousarray(vectors, np.float32), as_ids(ids))
            self._max_id = max(self.max_id, int(np.max(ids)))

    def erase(self, ids: Sequence[int] | npt.NDArray[np.int64]) -> int:
        """Erase face ids (unknown ones are ignored); returns how many were held."""
        arr = as_ids(ids)
        if not len(arr):
            return 0
        if self.building:
            self._pending.update(int(i) for i in arr)
        return sum(s.erase(arr) for s in self.segments)

    # ------------------------------------------------------------------ search (shared lock)
    def search(self, q: npt.NDArray[np.float32], k: int) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
        """``k`` nearest live faces per probe row: L2 distances in [0, 2] ascending, ids (-1 = none)."""
        nq = q.shape[0]
        ds, is_ = [], []
        for seg in self.segments:
            if seg.live:
                d, i = seg.search(q, k)
                ds.append(d)
                is_.append(i)
        if not ds:
            return np.full((nq, k), np.inf, np.float32), np.full((nq, k), -1, np.int64)
        d = np.concatenate(ds, axis=1)
        i = np.concatenate(is_, axis=1)
        if len(ds) > 1 or d.shape[1] != k or np.isinf(d).any():  # merge segments / push tombstones last
            order = np.argsort(d, axis=1, kind="stable")[:, :k]
            d = np.take_along_axis(d, order, axis=1)
            i = np.take_along_axis(i, order, axis=1)
            if d.shape[1] < k:
                pad = k - d.shape[1]
                d = np.pad(d, ((0, 0), (0, pad)), constant_values=np.inf)
                i = np.pad(i, ((0, 0), (0, pad)), constant_values=-1)
        return np.sqrt(np.clip(d, 0.0, 4.0)).astype(np.float32), i

    def set_ef_search(self, ef: int) -> None:
        for s in self.segments:
            s.set_ef_search(ef)

    def _storage_due(self) -> str | None:
        """The storage the HNSW main should be converted to (:meth:`IndexParams.storage_for`), None if none."""
        main = self.main
        if main is None or self.building:
            return None
        storage = self.params.storage_for(main.live, main.storage)
        return storage if storage != main.storage else None

    def needs_conversion(self) -> bool:
        """True when :meth:`convert_storage` has something to do (a cheap check, no lock needed)."""
        return self._storage_due() is not None

    def convert_storage(self) -> str | None:
        """Give an HNSW main of another storage than it should have (a snapshot saved before
        ``params.hnsw_storage`` changed, or a main grown to ``params.sq8_from`` faces) that storage, keeping its
        graph: the storage it was converted to (the caller should save a snapshot), else None."""
        main, storage = self.main, self._storage_due()
        if main is None or storage is None:
            return None
        converted = convert_hnsw_storage(main, storage)
        converted.set_ef_search(self.params.ef_search)
        self.segments[0] = converted
        return storage

    # ------------------------------------------------------------------ maintenance
    def needs_rebuild(self) -> bool:
        """True when the gallery crossed ``hnsw_threshold`` with no HNSW main, or the main has too many
        tombstones (compaction)."""
        if self.building:
            return False
        main = self.main
        if main is None:
            return self.live >= self.params.hnsw_threshold
        return len(main.tombstones) > self.params.compact_ratio * max(main.ntotal, 1)

    def needs_merge(self) -> bool:
        """True when an HNSW main exists and its flat segments hold at least ``merge_batch`` faces."""
        if self.building or self.main is None:
            return False
        return sum(s.ntotal for s in self.segments[1:]) >= self.params.merge_batch

    def begin_rebuild(self) -> tuple[list[Segment], list[set[int]]]:
        """Freeze every segment (new adds go to a fresh flat one); returns them and their tombstones."""
        frozen = list(self.segments)
        for s in frozen:
            s.frozen = True
        self.segments.append(Segment.new_flat())
        self.building = True
        self._pending = set()
        return frozen, [set(s.tombstones) for s in frozen]

    def finish_rebuild(self, frozen: list[Segment], built: Segment) -> None:
        """Swap the built HNSW in for the frozen segments and replay deletions made during the build."""
        keep = [s for s in self.segments if not any(s is f for f in frozen)]
        self.segments = [built, *keep]
        if self._pending:
            built.erase(as_ids(sorted(self._pending)))
        self._pending = set()
        self.building = False

    def abort_rebuild(self) -> None:
        for s in self.segments:
            s.frozen = False
        self._pending = set()
        self.building = False

    def merge_step(self) -> bool:
        """Move up to ``merge_chunk`` faces of the oldest flat segment into the HNSW main (exclusive lock).
        Returns True while more remain."""
        main = self.main
        if main is None or self.building or len(self.segments) < 2:
            return False
        seg = self.segments[1]
        ids = seg.ids()[: self.params.merge_chunk]
        vecs = seg.vectors()[: len(ids)]
        live = ~np.isin(ids, np.fromiter(seg.tombstones, np.int64)) if seg.tombstones else np.ones(len(ids), bool)
        if live.any():
            main.index.add_with_ids(np.ascontiguousarray(vecs[live]), np.ascontiguousarray(ids[live]))
        seg.index.remove_ids(faiss.IDSelectorBatch(ids))
        seg.tombstones.difference_update(int(i) for i in ids)
        seg._sync_tombstones()
        if seg.ntotal == 0 and len(self.segments) > 2:
            self.segments.pop(1)
        return sum(s.ntotal for s in self.segments[1:]) > 0
