"""Nearest-subject search over the embedded gallery's index cache: top-k *subjects*, each ranked by its best
face, with exact re-ranking of an approximate (``sq8``) index's candidates from the float32 embeddings in SQLite.

Distances are L2 between unit vectors, in [0, 2]; ``similarity = 1 - d**2 / 2``.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from embeddings.distance import distance_to_similarity
from embeddings.types import EMBEDDING_DIM
from service.gallery.grouping import check_model_present
from service.gallery.index import ModelIndex
from service.gallery.local.cache import IndexCache
from service.gallery.sqlite import SQLiteStore
from service.gallery.types import Candidate

Hit = tuple[int, int, float]
"""``(subject pk, face id, L2 distance)``."""


def search(
    cache: IndexCache, store: SQLiteStore, q: npt.NDArray[np.float32], model_id: str, top_k: int, overfetch: int
) -> list[list[Candidate]]:
    """For each (validated, unit) probe row of ``q``: up to ``top_k`` subjects by best face distance.

    :class:`ModelMismatch` if ``model_id`` has no faces while other models do; empty lists for an empty gallery.
    """
    with cache.rw.shared():
        idx = cache.models.get(model_id)
        if idx is None or idx.live == 0:
            check_model_present(model_id, {m: i.live for m, i in cache.models.items()})
            return [[] for _ in range(len(q))]
        hits = _search_subjects(cache, store, idx, q, top_k, model_id, overfetch)
    names = store.subjects_by_pk(sorted({pk for row in hits for pk, _, _ in row}))
    out: list[list[Candidate]] = []
    for row in hits:
        cands = []
        for pk, fid, dist in row:
            if pk in names:  # erased after the index search: dropped
                sid, name = names[pk]
                cands.append(Candidate(sid, name, fid, dist, distance_to_similarity(dist)))
        out.append(cands)
    return out


def rerank(
    store: SQLiteStore, q: npt.NDArray[np.float32], ids: npt.NDArray[np.int64], model_id: str
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
    """Exact L2 distances for an approximate index's candidate ``ids`` (one row per probe), from the float32
    embeddings in SQLite, each row re-sorted; a candidate SQLite no longer has (erased meanwhile) becomes
    ``-1``/inf."""
    found = store.embedding_blobs(np.unique(ids[ids >= 0]).tolist(), model_id)
    vecs = np.zeros((*ids.shape, EMBEDDING_DIM), np.float32)
    have = np.zeros(ids.shape, bool)
    for pos in zip(*np.nonzero(ids >= 0), strict=True):
        blob = found.get(int(ids[pos]))
        if blob is not None:
            vecs[pos] = np.frombuffer(blob, "<f4")
            have[pos] = True
    exact = np.sqrt(np.clip(((vecs - q[:, None, :]) ** 2).sum(axis=2), 0.0, 4.0)).astype(np.float32)
    exact = np.where(have, exact, np.inf).astype(np.float32)
    order = np.argsort(exact, axis=1, kind="stable")
    return np.take_along_axis(exact, order, axis=1), np.take_along_axis(np.where(have, ids, -1), order, axis=1)


def _search_subjects(
    cache: IndexCache,
    store: SQLiteStore,
    idx: ModelIndex,
    q: npt.NDArray[np.float32],
    top_k: int,
    model_id: str,
    overfetch: int,
) -> list[list[Hit]]:
    """Per probe, up to ``top_k`` hits by best face; over-fetches faces and grows the fetch until ``top_k``
    distinct subjects are found or every face was seen (caller holds ``cache.rw`` shared)."""
    live = idx.live
    kf = min(live, max(top_k * overfetch, 16))
    while True:
        dist, ids = idx.search(q, kf)
        if idx.approximate:
            dist, ids = rerank(store, q, ids, model_id)
        subj = np.where(ids >= 0, cache.subject_of[np.clip(ids, 0, None)], -1)
        rows: list[list[Hit]] = []
        short = False
        for r in range(len(q)):
            ok = subj[r] >= 0
            s, f, d = subj[r][ok], ids[r][ok], dist[r][ok]
            _, first = np.unique(s, return_index=True)
            first.sort()
            first = first[:top_k]
            if len(first) < top_k:
                short = True
            rows.append([(int(s[j]), int(f[j]), float(d[j])) for j in first])
        if not short or kf >= live:
            return rows
        kf = min(live, kf * 4)
