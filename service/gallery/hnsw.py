"""Building and converting HNSW segments: :func:`build_hnsw` makes a new HNSW main from frozen segments (outside
the gallery's locks: they do not change meanwhile), :func:`convert_hnsw_storage` re-encodes a main's vectors in
another storage keeping its graph. Both train an ``sq8`` range on a sample of the live vectors."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import faiss
import numpy as np
import numpy.typing as npt

from embeddings.types import EMBEDDING_DIM
from service.gallery.segment import HNSW, IndexParams, Progress, Segment, empty_hnsw


def convert_hnsw_storage(seg: Segment, storage: str, chunk: int = 65_536) -> Segment:
    """The HNSW segment ``seg`` with its vectors stored as ``storage`` (:data:`HNSW_STORAGES`): the same graph
    (copied), ids and tombstones, each vector re-encoded (fp16 -> float32 is exact; float32 -> fp16 rounds).
    Returns ``seg`` itself when it already has that storage. Briefly needs memory for both copies."""
    if seg.kind != HNSW or seg.storage == storage:
        return seg
    src: Any = faiss.downcast_index(seg.index.index)
    dst = empty_hnsw(int(src.hnsw.nb_neighbors(1)), storage)
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
    total = sum(s.ntotal for s in frozen)
    built = Segment.new_hnsw(params, total - sum(len(t) for t in tombstones))
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
