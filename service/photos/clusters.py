"""Cluster operations of the photo library: merge two, take a face out ("not this person", remembered as
cannot-link constraints), and full re-clustering with :func:`service.photos.cluster.cluster`. Naming a cluster
(its faces join a subject through the gallery) is :mod:`service.photos.naming`, re-exported here.

Re-clustering keeps cluster ids stable where it can: each new group takes the old id most of its faces had
(largest groups choose first), so a cluster a user is looking at keeps its id unless it was split or merged.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass

import numpy as np

from service.photos.cluster import cluster
from service.photos.errors import ClusterConflict
from service.photos.library import PhotoLibrary
from service.photos.naming import NamedCluster, name_cluster, passes_gate, repair_namings

__all__ = [
    "NamedCluster",
    "ReclusterResult",
    "merge_clusters",
    "name_cluster",
    "passes_gate",
    "recluster",
    "recluster_all",
    "remove_face",
    "repair_namings",
]

log = logging.getLogger("facerec.photos")

RECLUSTER_RUNS = 3
"""Clustering runs one re-clustering makes at most while users keep editing clusters (merges, "not this person")."""


def merge_clusters(lib: PhotoLibrary, *, into: int, other: int) -> int:
    """Move every face of ``other`` into ``into``; constraints between the two are dropped (the user said they
    are one person) and re-clustering keeps their faces together from now on. Returns the merged cluster's size."""
    if into == other:
        raise ClusterConflict("a cluster cannot be merged with itself")
    with lib.write_lock:  # the store's one transaction also excludes other replicas (their merges and splits)
        return lib.store.merge_clusters(into, other)


def remove_face(lib: PhotoLibrary, *, cluster_id: int, face_id: int) -> int:
    """ "Not this person": the face leaves the cluster for a new one of its own, and cannot-link constraints
    with every face it leaves behind keep it out on re-clustering. Returns its new cluster id."""
    with lib.write_lock:
        return lib.store.split_face(cluster_id, face_id)


@dataclass
class ReclusterResult:
    faces: int
    clusters: int
    changed: int
    seconds: float


def recluster(lib: PhotoLibrary, *, model_id: str) -> ReclusterResult:
    """Cluster every unnamed face of ``model_id`` again from scratch, respecting the user's edits: faces taken
    out of a cluster stay out (cannot-link), faces of merged clusters stay together (merge groups).

    The clustering runs without the write lock on a snapshot; faces indexed meanwhile keep their incremental
    cluster, faces named or erased meanwhile are left alone (the store only updates unnamed faces). If a user
    merged clusters or took a face out meanwhile, it runs again (at most :data:`RECLUSTER_RUNS` times in all);
    if they were still editing during the last run, nothing is written (``changed`` 0): writing a result that
    predates an edit would undo it."""
    start = time.perf_counter()
    for _ in range(RECLUSTER_RUNS):
        constraints = _constraints(lib)
        ids, emb = lib.store.all_embeddings(model_id, unnamed_only=True)
        old = lib.store.cluster_of(ids.tolist())
        pos = {int(i): p for p, i in enumerate(ids)}
        links = [(pos[a], pos[b]) for a, b in constraints[0] if a in pos and b in pos]
        groups = [[pos[i] for i in group if i in pos] for group in constraints[1]]
        lib.set_unnamed_count(model_id, len(ids))
        params = dataclasses.replace(lib.cluster_params, threshold=lib.link_threshold(len(ids), model_id=model_id))
        labels = cluster(emb, params, links, [g for g in groups if len(g) > 1])
        with lib.write_lock:
            if _constraints(lib) != constraints:
                continue  # clusters were merged or a face taken out meanwhile: cluster again with that
            assignment = _stable_ids(lib, ids, labels, old)
            changed = lib.store.replace_clusters(assignment)
        n_clusters = len(set(assignment.values()))
        seconds = time.perf_counter() - start
        log.info("photo library: re-clustered %d faces into %d clusters in %.1f s", len(ids), n_clusters, seconds)
        return ReclusterResult(len(ids), n_clusters, changed, seconds)
    seconds = time.perf_counter() - start
    log.info("photo library: re-clustering left the clusters as they are: edited during each of its runs")
    return ReclusterResult(len(ids), len(set(lib.store.cluster_of(ids.tolist()).values())), 0, seconds)


def _constraints(lib: PhotoLibrary) -> tuple[frozenset[tuple[int, int]], tuple[tuple[int, ...], ...]]:
    """The user's edits re-clustering respects: cannot-link pairs and merge groups (face ids)."""
    return frozenset(lib.store.cannot_links()), tuple(tuple(g) for g in sorted(lib.store.merged_groups()))


def recluster_all(lib: PhotoLibrary) -> ReclusterResult:
    """:func:`recluster` for every model id of the stored faces; the totals."""
    total = ReclusterResult(0, 0, 0, 0.0)
    for model_id in lib.store.model_ids():
        r = recluster(lib, model_id=model_id)
        total = ReclusterResult(
            total.faces + r.faces, total.clusters + r.clusters, total.changed + r.changed, total.seconds + r.seconds
        )
    return total


def _stable_ids(lib: PhotoLibrary, ids: np.ndarray, labels: np.ndarray, old: dict[int, int]) -> dict[int, int]:
    """Observation id -> cluster id: each new group reuses the old id most of its faces had, if still free."""
    groups: dict[int, list[int]] = {}
    for i, lab in zip(ids.tolist(), labels.tolist(), strict=True):
        groups.setdefault(lab, []).append(i)
    taken: set[int] = set()
    out: dict[int, int] = {}
    need_new: list[list[int]] = []
    for members in sorted(groups.values(), key=len, reverse=True):
        counts: dict[int, int] = {}
        for i in members:
            if i in old:
                counts[old[i]] = counts.get(old[i], 0) + 1
        choice = next((c for c, _ in sorted(counts.items(), key=lambda kv: -kv[1]) if c not in taken), None)
        if choice is None:
            need_new.append(members)
            continue
        taken.add(choice)
        out.update(dict.fromkeys(members, choice))
    fresh = lib.store.new_cluster_ids(len(need_new)) if need_new else []
    for members, cid in zip(need_new, fresh, strict=True):
        out.update(dict.fromkeys(members, cid))
    return out
