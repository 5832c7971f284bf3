"""The FAISS index of one model: a cache of SQLite, keyed by integer face id (``IndexIDMap``).

Layout: a list of *segments*. At most one is HNSW (the approximate "main", built in bulk); the others are
exact flat indexes (``IndexIDMap(IndexFlatL2)``) holding recent adds. A small gallery is a single flat
segment: exact search. Past ``hnsw_threshold`` live faces a rebuild makes an HNSW main from every segment
(the flat segments are frozen meanwhile and new adds go to a fresh flat one), and later flat adds are merged
into the main in small chunks once they reach ``merge_batch``.

Deletion: a face in the active flat segment is removed outright; a face in HNSW (which cannot remove) or in a
frozen segment becomes a *tombstone*: its stored vector is overwritten at once with a far constant point
(:data:`TOMBSTONE_FILL`; so neither memory nor the next snapshot keeps the embedding) and its id is
filtered out of every result (searches over-fetch and retry until they have ``k`` live results). When
tombstones exceed ``compact_ratio`` of the main, it is rebuilt.

Distances: FAISS L2 indexes return squared L2; :meth:`ModelIndex.search` returns L2 in [0, 2].
Thread-safety: none here; the gallery holds a readers-writer lock around these calls.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import faiss
import numpy as np
import numpy.typing as npt

from embeddings.types import EMBEDDING_DIM

FLAT = "flat"
HNSW = "hnsw"

HNSW_STORAGES = ("fp16", "sq8", "float32")
"""How an HNSW main stores its vectors: ``fp16`` (``IndexHNSWSQ`` with ``QT_fp16``, 256 bytes a face; the default),
``sq8`` (``QT_8bit``: 8 bits a component over its trained range, 128 bytes a face; distances are approximate, so
:attr:`ModelIndex.approximate` tells the caller to re-rank the candidates with exact vectors) or ``float32``
(``IndexHNSWFlat``, 512 bytes; galleries saved before fp16 storage). At 1M faces fp16 saves 244 MiB
of the server's resident memory. Unit vectors lose nothing that matters in half precision: each component is
rounded to a relative 2**-11, so an L2 distance moves by ~1e-4 (the open-set thresholds are 0.6-1.2); recall@1
against exact float32 search is measured in docs/GALLERY.md. The HNSW graph does not depend on the storage, so
an old float32 main is converted at load by copying its graph and encoding its vectors
(:func:`convert_hnsw_storage`), without a rebuild."""

TOMBSTONE_FILL = 100.0
"""Every component of an erased vector is overwritten with this. Not 0: a zero vector is at squared L2 1 from
every unit probe, closer than most real faces, and would trap HNSW's greedy search (and later insertions)
around it. A far point (squared L2 ~1.3e6) is never a step towards anything: the node drops out of the graph
until compaction rebuilds it, and the original embedding is gone from memory and from the next snapshot."""

Progress = Callable[[int, int], None]
"""``progress(done, total)`` in faces."""


@dataclass(frozen=True, slots=True)
class IndexParams:
    """Index settings. ``hnsw_m`` / ``ef_construction`` / ``ef_search`` were chosen by measurement
    (bench/gallery.py, docs/GALLERY.md) for recall@1 >= 0.99 against exact search."""

    hnsw_threshold: int = 50_000
    hnsw_m: int = 32
    hnsw_storage: str = "fp16"
    ef_construction: int = 80
    ef_search: int = 128
    merge_batch: int = 10_000
    merge_chunk: int = 1_000
    compact_ratio: float = 0.1


def _as_ids(ids: Sequence[int] | npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    return np.ascontiguousarray(np.asarray(ids, dtype=np.int64).reshape(-1))


class Segment:
    """One FAISS ``IndexIDMap`` (flat or HNSW) and the ids erased from it (tombstones)."""

    def __init__(self, index: faiss.IndexIDMap, kind: str, tombstones: set[int] | None = None) -> None:
        self.index = index
        self.kind = kind
        self.tombstones: set[int] = set(tombstones or ())
        self.frozen = False
        self._sync_tombstones()

    def _sync_tombstones(self) -> None:
        """Refresh the sorted array and the by-id boolean mask (O(1) lookups at query time)."""
        self._tomb_arr = np.array(sorted(self.tombstones), dtype=np.int64)
        self._dead = np.zeros(int(self._tomb_arr[-1]) + 1 if len(self._tomb_arr) else 0, dtype=bool)
        self._dead[self._tomb_arr] = True

    def is_dead(self, ids: npt.NDArray[np.int64]) -> npt.NDArray[np.bool_]:
        """Elementwise: is this id a tombstone here (-1 and unknown ids are not)."""
        if not len(self._dead):
            return np.zeros(np.shape(ids), dtype=bool)
        inside = (ids >= 0) & (ids < len(self._dead))
        return inside & self._dead[np.where(inside, ids, 0)]

    @classmethod
    def new_flat(cls) -> Segment:
        return cls(faiss.IndexIDMap(faiss.IndexFlatL2(EMBEDDING_DIM)), FLAT)

    @classmethod
    def new_hnsw(cls, params: IndexParams) -> Segment:
        hnsw = _empty_hnsw(params.hnsw_m, params.hnsw_storage)
        hnsw.hnsw.efConstruction = params.ef_construction
        hnsw.hnsw.efSearch = params.ef_search
        return cls(faiss.IndexIDMap(hnsw), HNSW)

    @property
    def storage(self) -> str:
        """The vector storage of an HNSW segment (:data:`HNSW_STORAGES`); ``float32`` for flat ones."""
        if self.kind != HNSW:
            return "float32"
        sub: Any = faiss.downcast_index(self.index.index)
        if not isinstance(sub, faiss.IndexHNSWSQ):
            return "float32"
        sq: Any = faiss.downcast_index(sub.storage)
        return "fp16" if sq.sq.qtype == faiss.ScalarQuantizer.QT_fp16 else "sq8"

    def _codes(self) -> npt.NDArray[np.uint8] | None:
        """A view of a scalar-quantised HNSW's codes, (ntotal, code_size) uint8; None for float32 storage."""
        sub: Any = faiss.downcast_index(self.index.index)
        storage: Any = faiss.downcast_index(sub.storage) if self.kind == HNSW else sub
        if not isinstance(storage, faiss.IndexScalarQuantizer):
            return None
        n, size = self.ntotal, int(storage.code_size)
        return faiss.rev_swig_ptr(storage.codes.data(), n * size).reshape(n, size) if n else None

    def decoded(self, start: int = 0, stop: int | None = None) -> npt.NDArray[np.float32]:
        """Stored vectors ``start:stop`` (storage order) as a float32 *copy*, decoded from any storage."""
        codes = self._codes()
        if codes is None:
            return np.array(self.vectors()[start:stop], dtype=np.float32)
        sub: Any = faiss.downcast_index(self.index.index)
        storage: Any = faiss.downcast_index(sub.storage)
        part = np.ascontiguousarray(codes[start:stop])
        return np.asarray(storage.sa_decode(part), dtype=np.float32).reshape(len(part), EMBEDDING_DIM)

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal)

    @property
    def live(self) -> int:
        return self.ntotal - len(self.tombstones)

    def ids(self) -> npt.NDArray[np.int64]:
        """All ids in storage order (tombstoned ones included); a copy."""
        return faiss.vector_to_array(self.index.id_map).astype(np.int64, copy=False)

    def live_ids(self) -> npt.NDArray[np.int64]:
        ids = self.ids()
        return ids[~np.isin(ids, self._tomb_arr)] if self.tombstones else ids

    def vectors(self) -> npt.NDArray[np.float32] | npt.NDArray[np.float16]:
        """A *view* of the stored vectors, (ntotal, 128), in storage order: float32, or float16 for an fp16 HNSW
        (IEEE half codes; writing to the view changes the index). Invalid after any add/remove."""
        sub: Any = faiss.downcast_index(self.index.index)
        storage: Any = faiss.downcast_index(sub.storage) if self.kind == HNSW else sub
        n = self.ntotal
        if n == 0:
            return np.zeros((0, EMBEDDING_DIM), np.float32)
        if isinstance(storage, faiss.IndexScalarQuantizer):
            if storage.sq.qtype != faiss.ScalarQuantizer.QT_fp16:
                raise TypeError("sq8 codes are not a float view: use decoded()")
            codes = faiss.rev_swig_ptr(storage.codes.data(), n * storage.code_size)
            return codes.view(np.float16).reshape(n, EMBEDDING_DIM)
        return faiss.rev_swig_ptr(storage.get_xb(), n * EMBEDDING_DIM).reshape(n, EMBEDDING_DIM)

    def set_ef_search(self, ef: int) -> None:
        if self.kind == HNSW:
            sub: Any = faiss.downcast_index(self.index.index)
            sub.hnsw.efSearch = ef

    def erase(self, ids: npt.NDArray[np.int64]) -> int:
        """Erase those of ``ids`` held here; returns how many. Removes from an active flat segment,
        tombstones (and overwrites with :data:`TOMBSTONE_FILL`) otherwise."""
        stored = self.ids()
        hit = np.isin(stored, ids)
        if self.tombstones:
            hit &= ~np.isin(stored, self._tomb_arr)
        n = int(hit.sum())
        if not n:
            return 0
        if self.kind == FLAT and not self.frozen:
            self.index.remove_ids(faiss.IDSelectorBatch(stored[hit]))
            return n
        codes = self._codes()
        if codes is None:
            self.vectors()[hit] = TOMBSTONE_FILL
        else:  # the code of the far point (sq8 clips it to the corner of its trained range: still far)
            sub: Any = faiss.downcast_index(self.index.index)
            storage: Any = faiss.downcast_index(sub.storage)
            codes[hit] = storage.sa_encode(np.full((1, EMBEDDING_DIM), TOMBSTONE_FILL, np.float32))[0]
        self.tombstones.update(int(i) for i in stored[hit])
        self._sync_tombstones()
        return n

    def search(self, q: npt.NDArray[np.float32], k: int) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
        """Up to ``k`` live nearest per row: squared L2 (inf where missing) and ids (-1 where missing)."""
        n = self.ntotal
        want = min(k, self.live)
        kk = min(n, k + min(len(self.tombstones), k) if self.tombstones else k)
        while True:
            d, i = self.index.search(q, max(kk, 1))
            if self.tombstones:
                dead = self.is_dead(i)
                i = np.where(dead, -1, i)
                d = np.where(dead, np.inf, d)
            found = (i >= 0).sum(axis=1)
            if kk >= n or bool((found >= want).all()):
                break
            kk = min(n, kk * 2)
        d = np.where(i < 0, np.inf, d).astype(np.float32)
        return d, i


class ModelIndex:
    """All faces of one model id. See the module docstring for the layout."""

    def __init__(self, params: IndexParams, segments: list[Segment] | None = None) -> None:
        self.params = params
        self.segments: list[Segment] = segments if segments is not None else [Segment.new_flat()]
        self.building = False
        self._pending: set[int] = set()

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
            self._active().index.add_with_ids(np.ascontiguousarray(vectors, np.float32), _as_ids(ids))

    def erase(self, ids: Sequence[int] | npt.NDArray[np.int64]) -> int:
        """Erase face ids (unknown ones are ignored); returns how many were held."""
        arr = _as_ids(ids)
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

    def convert_storage(self) -> bool:
        """Give an HNSW main of another storage (a snapshot saved before ``params.hnsw_storage`` changed) the
        configured one, keeping its graph; True if it was converted (the caller should save a snapshot)."""
        main = self.main
        if main is None or self.building or main.storage == self.params.hnsw_storage:
            return False
        converted = convert_hnsw_storage(main, self.params.hnsw_storage)
        converted.set_ef_search(self.params.ef_search)
        self.segments[0] = converted
        return True

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
            built.erase(_as_ids(sorted(self._pending)))
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


def _empty_hnsw(m: int, storage: str) -> Any:
    if storage == "fp16":
        qtype: Any = faiss.ScalarQuantizer.QT_fp16  # an int; the stubs say ScalarQuantizer
        return faiss.IndexHNSWSQ(EMBEDDING_DIM, qtype, m)
    if storage == "sq8":
        qtype8: Any = faiss.ScalarQuantizer.QT_8bit
        return faiss.IndexHNSWSQ(EMBEDDING_DIM, qtype8, m)
    if storage == "float32":
        return faiss.IndexHNSWFlat(EMBEDDING_DIM, m)
    raise ValueError(f"hnsw_storage must be one of {', '.join(HNSW_STORAGES)}; got {storage!r}")


def convert_hnsw_storage(seg: Segment, storage: str, chunk: int = 65_536) -> Segment:
    """The HNSW segment ``seg`` with its vectors stored as ``storage`` (:data:`HNSW_STORAGES`): the same graph
    (copied), ids and tombstones, each vector re-encoded (fp16 -> float32 is exact; float32 -> fp16 rounds).
    Returns ``seg`` itself when it already has that storage. Briefly needs memory for both copies."""
    if seg.kind != HNSW or seg.storage == storage:
        return seg
    src: Any = faiss.downcast_index(seg.index.index)
    dst = _empty_hnsw(int(src.hnsw.nb_neighbors(1)), storage)
    wrapped = faiss.IndexIDMap(dst)  # must wrap an empty index; filled below
    dst.hnsw = src.hnsw  # a copy of the graph (levels, offsets, neighbours, entry point, efSearch...)
    target: Any = faiss.downcast_index(dst.storage)
    n = seg.ntotal
    if not target.is_trained:
        target.train(_training_sample([seg], [seg.tombstones]))
    for start in range(0, n, chunk):
        target.add(seg.decoded(start, start + chunk))
    dst.ntotal = n
    wrapped.ntotal = n
    faiss.copy_array_to_vector(seg.ids(), wrapped.id_map)
    return Segment(wrapped, HNSW, seg.tombstones)


def _training_sample(
    segments: Sequence[Segment], tombstones: Sequence[set[int]], size: int = 100_000, chunk: int = 65_536
) -> npt.NDArray[np.float32]:
    """About ``size`` live vectors, evenly spread over the segments, to train an ``sq8`` range on (tombstones
    left out); decoded chunk by chunk, so a 1M-face segment is never copied whole."""
    step = max(1, sum(s.ntotal for s in segments) // size)
    parts = []
    for seg, tomb in zip(segments, tombstones, strict=True):
        ids = seg.ids()
        dead = np.array(sorted(tomb), np.int64)
        for start in range(0, len(ids), chunk):
            rows = np.arange(start, min(start + chunk, len(ids)))[::step]
            rows = rows[~np.isin(ids[rows], dead)] if len(dead) else rows
            if len(rows):
                parts.append(seg.decoded(start, start + chunk)[rows - start])
    if not parts:  # nothing live: the range of any unit vector
        eye = np.eye(EMBEDDING_DIM, dtype=np.float32)
        return np.concatenate([eye, -eye])
    return np.ascontiguousarray(np.concatenate(parts), dtype=np.float32)


def build_hnsw(
    frozen: list[Segment],
    tombstones: list[set[int]],
    params: IndexParams,
    progress: Progress | None = None,
    chunk: int = 20_000,
) -> Segment:
    """Build a new HNSW segment from the live vectors of frozen segments (no lock needed: they do not change
    except for overwritten tombstones, which the caller replays afterwards)."""
    built = Segment.new_hnsw(params)
    total = sum(s.ntotal for s in frozen)
    done = 0
    if not built.index.is_trained:  # sq8: the per-component range, from the live vectors
        built.index.train(_training_sample(frozen, tombstones))
    for seg, tomb in zip(frozen, tombstones, strict=True):
        ids = seg.ids()
        dead = np.array(sorted(tomb), dtype=np.int64)
        for start in range(0, len(ids), chunk):
            cid = ids[start : start + chunk]
            vec = seg.decoded(start, start + len(cid))
            keep = ~np.isin(cid, dead) if len(dead) else np.ones(len(cid), bool)
            if keep.any():
                built.index.add_with_ids(np.ascontiguousarray(vec[keep]), np.ascontiguousarray(cid[keep]))
            done += len(cid)
            if progress is not None:
                progress(done, total)
    return built
