"""Clustering unnamed faces: Chinese whispers (dlib's algorithm) on a thresholded k-nearest-neighbour graph,
with cannot-link constraints ("not this person").

Chosen by measurement against DBSCAN with Immich's settings, HDBSCAN and average-linkage agglomerative
clustering (``bench/cluster.py`` on LFW; figures in docs/PHOTOS.md). Pure functions over unit embeddings
(n, 128) float32; distances are L2 in [0, 2]; labels are integers, equal for faces of one cluster.

The graph: each face's ``k`` nearest neighbours (exact FAISS search up to :data:`EXACT_MAX` faces, an IVF
index above, so 100k faces take seconds) joined by an edge when their distance is at most ``threshold``.
Chinese whispers: every face starts in its own cluster; in passes over the faces in random order, each face
takes the label with the largest total edge weight among its neighbours, until no label changes.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import faiss
import numpy as np
import numpy.typing as npt

from embeddings.distance import distance_to_similarity
from service.gallery.calibration import Calibration

EXACT_MAX = 20_000
"""Up to this many faces the kNN graph is exact (flat search); above, an IVF index (approximate)."""


@dataclass(frozen=True, slots=True)
class ClusterParams:
    """``threshold``: L2 distance linking two faces; ``k``: neighbours per face in the graph; ``max_passes`` and
    ``seed`` of Chinese whispers."""

    threshold: float = 0.8
    k: int = 20
    max_passes: int = 30
    seed: int = 0


def linking_threshold(n_faces: int, *, calibration: Calibration | None, max_fir: float, cap: float) -> float:
    """The L2 distance that links two faces in a library of ``n_faces`` unnamed faces: the open-set threshold at
    which a face has another person's face within reach with probability ``max_fir`` among ``n_faces``
    comparisons (the model's own tables, :meth:`Calibration.threshold_for_fir`, as identify uses them), at most
    ``cap``.

    The more faces, the more look-alikes, so the tighter the link: on LFW's 13,232 faces this gives ~0.8, on
    a hundred photos ~1.0 (docs/PHOTOS.md). A model without calibration tables: ``cap``."""
    if calibration is None:
        return cap
    try:
        return min(cap, float(calibration.threshold_for_fir(max_fir, max(n_faces, 1))))
    except ValueError:
        return cap


def knn_graph(
    emb: npt.NDArray[np.float32], k: int, threshold: float
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.float32]]:
    """Edges ``(i, j, distance)`` with ``i < j`` between faces within ``threshold`` among each face's ``k``
    nearest neighbours (deduplicated)."""
    n = len(emb)
    if n < 2:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32)
    x = np.ascontiguousarray(emb, dtype=np.float32)
    kk = min(k + 1, n)
    index: faiss.Index
    if n <= EXACT_MAX:
        index = faiss.IndexFlatL2(x.shape[1])
    else:
        nlist = int(4 * np.sqrt(n))
        quantizer = faiss.IndexFlatL2(x.shape[1])
        ivf = faiss.IndexIVFFlat(quantizer, x.shape[1], nlist)
        ivf.train(x[:: max(1, n // (nlist * 40))])
        ivf.nprobe = 16
        index = ivf
    index.add(x)
    d2, nb = index.search(x, kk)
    rows = np.repeat(np.arange(n, dtype=np.int64), kk)
    cols = nb.reshape(-1).astype(np.int64)
    dist = np.sqrt(np.clip(d2.reshape(-1), 0.0, 4.0)).astype(np.float32)
    keep = (cols >= 0) & (cols != rows) & (dist <= threshold)
    a, b, dist = rows[keep], cols[keep], dist[keep]
    lo, hi = np.minimum(a, b), np.maximum(a, b)
    key = lo * n + hi
    _, first = np.unique(key, return_index=True)
    return lo[first], hi[first], dist[first]


def chinese_whispers(
    n: int,
    a: npt.NDArray[np.int64],
    b: npt.NDArray[np.int64],
    weights: npt.NDArray[np.float32],
    *,
    max_passes: int = 30,
    seed: int = 0,
) -> npt.NDArray[np.int64]:
    """Labels (n,) from an undirected weighted graph given as edges ``(a[i], b[i], weights[i])``."""
    labels = list(range(n))
    if len(a) == 0:
        return np.arange(n, dtype=np.int64)
    src = np.concatenate([a, b])
    dst = np.concatenate([b, a])
    w = np.concatenate([weights, weights]).astype(np.float64)
    order = np.argsort(src, kind="stable")
    dst_l: list[int] = dst[order].tolist()
    w_l: list[float] = w[order].tolist()
    starts: list[int] = np.searchsorted(src[order], np.arange(n + 1)).tolist()
    nodes = [i for i in range(n) if starts[i + 1] > starts[i]]
    rng = random.Random(seed)
    for _ in range(max_passes):
        rng.shuffle(nodes)
        changed = 0
        for i in nodes:
            votes: dict[int, float] = {}
            for e in range(starts[i], starts[i + 1]):
                lab = labels[dst_l[e]]
                votes[lab] = votes.get(lab, 0.0) + w_l[e]
            best = max(votes.items(), key=lambda kv: (kv[1], -kv[0]))[0]
            if best != labels[i]:
                labels[i] = best
                changed += 1
        if not changed:
            break
    return np.asarray(labels, dtype=np.int64)


def enforce_cannot_links(
    labels: npt.NDArray[np.int64], pairs: Iterable[tuple[int, int]], groups: Sequence[Sequence[int]] = ()
) -> npt.NDArray[np.int64]:
    """Split constrained pairs that ended up in one cluster: of the two faces, one that is in none of ``groups``
    (faces a user merged), else the one with more constraints (the face a user took out of a group is constrained
    against every face it left), moves to a new cluster: alone, or with the faces of its group in that cluster
    (a group stays together). Positions, not ids. Returns a new array."""
    pairs = list(pairs)
    out = labels.copy()
    group_of = {int(p): g for g, members in enumerate(groups) for p in members}
    degree: dict[int, int] = {}
    for i, j in pairs:
        degree[i] = degree.get(i, 0) + 1
        degree[j] = degree.get(j, 0) + 1
    fresh = int(out.max()) + 1 if len(out) else 0
    for i, j in pairs:
        if out[i] == out[j]:
            move, other = (j, i) if (j not in group_of, degree[j]) >= (i not in group_of, degree[i]) else (i, j)
            g = group_of.get(move)
            members = [move]
            if g is not None and g != group_of.get(other):
                members = [p for p in groups[g] if out[p] == out[move]]
            out[members] = fresh
            fresh += 1
    return out


def join_groups(labels: npt.NDArray[np.int64], groups: Iterable[Sequence[int]]) -> npt.NDArray[np.int64]:
    """Labels with every group of positions (faces a user merged) in one cluster: the clusters a group's faces
    ended up in become one (labelled by the smallest of their labels). Returns a new array."""
    parent: dict[int, int] = {}

    def root(x: int) -> int:
        while parent.get(x, x) != x:
            x = parent[x]
        return x

    for group in groups:
        roots = sorted({root(int(labels[p])) for p in group})
        for r in roots[1:]:
            parent[r] = roots[0]
    if not parent:
        return labels.copy()
    return np.asarray([root(int(x)) for x in labels.tolist()], dtype=np.int64)


def cluster(
    emb: npt.NDArray[np.float32],
    params: ClusterParams,
    cannot_link: Iterable[tuple[int, int]] = (),
    must_link: Iterable[Sequence[int]] = (),
) -> npt.NDArray[np.int64]:
    """Cluster labels (n,) for unit embeddings; ``cannot_link``: pairs of positions that must not share one;
    ``must_link``: groups of positions that must (a user's merges).

    Constrained pairs lose their edge before the whispers run; then the clusters holding one must-link group
    are joined (:func:`join_groups`), and any cannot-link pair still together (joined through other faces) is
    split by :func:`enforce_cannot_links`."""
    n = len(emb)
    a, b, dist = knn_graph(emb, params.k, params.threshold)
    pairs = [(int(i), int(j)) for i, j in cannot_link]
    if pairs and len(a):
        banned = {min(i, j) * n + max(i, j) for i, j in pairs}
        keep = ~np.isin(a * n + b, np.fromiter(banned, np.int64, len(banned)))
        a, b, dist = a[keep], b[keep], dist[keep]
    weights = (1.0 - dist**2 / 2.0).astype(np.float32)  # cosine similarity: nearer faces vote louder
    labels = chinese_whispers(n, a, b, weights, max_passes=params.max_passes, seed=params.seed)
    groups = [list(g) for g in must_link]
    labels = join_groups(labels, groups)
    return enforce_cannot_links(labels, pairs, groups) if pairs else labels


def vote(neighbour_clusters: list[int], neighbour_dists: list[float], threshold: float) -> int | None:
    """The cluster a new face joins: the one with the largest summed similarity among its neighbours within
    ``threshold`` (the Chinese-whispers rule for one node), or None (start a new cluster)."""
    votes: dict[int, float] = {}
    for c, d in zip(neighbour_clusters, neighbour_dists, strict=True):
        if d <= threshold:
            votes[c] = votes.get(c, 0.0) + distance_to_similarity(d)
    if not votes:
        return None
    return max(votes.items(), key=lambda kv: (kv[1], -kv[0]))[0]
