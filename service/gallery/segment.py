"""One FAISS segment of a model's index: an ``IndexIDMap`` (exact flat, or HNSW with fp16 / sq8 / float32
storage) keyed by face id, with the ids erased from it (tombstones), and the index tunables (:class:`IndexParams`).
The layout of segments in a model's index is described in :mod:`service.gallery.index`.

Distances: FAISS L2 indexes return squared L2. Thread-safety: none here; the gallery holds a readers-writer lock.
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
    sq8_from: int = 0
    """An HNSW main of this many live faces or more stores ``sq8`` whatever ``hnsw_storage`` says (0: never).
    Once sq8 it stays sq8 (no back-and-forth around the size); a rebuild below the size takes ``hnsw_storage``."""
    ef_construction: int = 80
    ef_search: int = 128
    merge_batch: int = 10_000
    merge_chunk: int = 1_000
    compact_ratio: float = 0.1

    def storage_for(self, live: int, current: str | None = None) -> str:
        """The storage an HNSW main of ``live`` faces, stored as ``current`` (None: a new build), should have."""
        if self.sq8_from and (live >= self.sq8_from or current == "sq8"):
            return "sq8"
        return self.hnsw_storage


def as_ids(ids: Sequence[int] | npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
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
    def new_hnsw(cls, params: IndexParams, live: int = 0) -> Segment:
        """An empty HNSW segment for ``live`` faces to come (:meth:`IndexParams.storage_for`)."""
        hnsw = empty_hnsw(params.hnsw_m, params.storage_for(live))
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


def empty_hnsw(m: int, storage: str) -> Any:
    if storage == "fp16":
        qtype: Any = faiss.ScalarQuantizer.QT_fp16  # an int; the stubs say ScalarQuantizer
        return faiss.IndexHNSWSQ(EMBEDDING_DIM, qtype, m)
    if storage == "sq8":
        qtype8: Any = faiss.ScalarQuantizer.QT_8bit
        return faiss.IndexHNSWSQ(EMBEDDING_DIM, qtype8, m)
    if storage == "float32":
        return faiss.IndexHNSWFlat(EMBEDDING_DIM, m)
    raise ValueError(f"hnsw_storage must be one of {', '.join(HNSW_STORAGES)}; got {storage!r}")
