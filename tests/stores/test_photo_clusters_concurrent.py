"""Cluster edits of the photo library from two replicas at once (the real PostgreSQL, and the embedded store
reopened): each merge or split is one store transaction, so two merges of the same pair in opposite directions
give one merged cluster (one of them finds its source gone), never the two clusters swapped."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from service.photos.errors import ClusterNotFound
from service.photos.types import NewObservation
from tests.storefixtures import OpenStores, add_cannot_link

BOX = {"x": 0, "y": 0, "width": 50, "height": 50}


def two_clusters(store: Any, n: int, rng: np.random.Generator) -> tuple[int, int, list[int]]:
    emb = rng.standard_normal((6, 128)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    faces = [NewObservation(e, "m", BOX, {}, cluster_id=-1 if i < 3 else -2) for i, e in enumerate(emb)]
    _, stored, _ = store.add_photo(sha256=f"photo-{n}", external_id=None, faces=faces)
    return int(stored[0].cluster_id), int(stored[3].cluster_id), [f.id for f in stored]


def at_once(*calls: Callable[[], int]) -> list[int | Exception]:
    barrier = threading.Barrier(len(calls))

    def run(call: Callable[[], int]) -> int | Exception:
        barrier.wait()
        try:
            return call()
        except ClusterNotFound as exc:
            return exc

    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(run, calls))


def test_opposite_merges_at_once_give_one_cluster(media_stores: OpenStores) -> None:
    a, b = media_stores("a").photos, media_stores("b").photos
    rng = np.random.default_rng(0)
    for n in range(15):
        x, y, ids = two_clusters(a, n, rng)
        add_cannot_link(a, ids[0], ids[3])  # a constraint the merge must drop (the user said they are one person)
        results = at_once(lambda: a.merge_clusters(x, y), lambda: b.merge_clusters(y, x))  # noqa: B023
        assert sorted(type(r).__name__ for r in results) == ["ClusterNotFound", "int"], results
        assert 6 in results
        clusters = {f.cluster_id for f in a.get_faces(ids)}
        assert len(clusters) == 1, f"round {n}: {clusters}"  # merged, not swapped
        assert (ids[0], ids[3]) not in set(a.cannot_links())  # the user said they are one person


def test_splits_of_two_faces_at_once_both_hold(media_stores: OpenStores) -> None:
    a, b = media_stores("a").photos, media_stores("b").photos
    rng = np.random.default_rng(1)
    for n in range(10):
        x, _, ids = two_clusters(a, n, rng)
        results = at_once(lambda: a.split_face(x, ids[0]), lambda: b.split_face(x, ids[1]))  # noqa: B023
        assert all(isinstance(r, int) for r in results) and results[0] != results[1], results
        after = {f.id: f.cluster_id for f in a.get_faces(ids[:3])}
        assert after == {ids[0]: results[0], ids[1]: results[1], ids[2]: x}
        links = set(a.cannot_links())
        assert {(min(ids[0], ids[2]), max(ids[0], ids[2])), (min(ids[1], ids[2]), max(ids[1], ids[2]))} <= links
