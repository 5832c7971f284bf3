"""The clustering functions: kNN graph, Chinese whispers, cannot-link enforcement, merge groups, the join vote, and the
benchmark's pairwise/BCubed scores."""

from __future__ import annotations

import numpy as np

from bench.cluster import scores, synthetic
from service.photos import cluster as cl


def test_whispers_finds_synthetic_people_exactly_and_at_scale() -> None:
    emb, who = synthetic(600, 6, 0.03, seed=3)
    labels = cl.cluster(emb, cl.ClusterParams(threshold=0.8))
    s = scores(who, labels)
    assert s["pair_precision"] == 1.0 and s["pair_recall"] == 1.0
    big, big_who = synthetic(cl.EXACT_MAX + 5000, 10, 0.03, seed=4)  # the approximate (IVF) graph
    s = scores(big_who, cl.cluster(big, cl.ClusterParams(threshold=0.8)))
    assert s["pair_precision"] > 0.99 and s["pair_recall"] > 0.95


def test_graph_edges_are_within_the_threshold_and_unique() -> None:
    emb, _ = synthetic(200, 4, 0.05, seed=1)
    a, b, d = cl.knn_graph(emb, 10, 0.9)
    assert len(a) and (a < b).all() and (d <= 0.9).all()
    assert len(set(zip(a.tolist(), b.tolist(), strict=True))) == len(a)
    assert np.allclose(d, np.linalg.norm(emb[a] - emb[b], axis=1), atol=1e-4)


def test_cannot_links_split_a_cluster() -> None:
    emb, _ = synthetic(10, 10, 0.03, seed=2)  # one person
    assert len(set(cl.cluster(emb, cl.ClusterParams()).tolist())) == 1
    labels = cl.cluster(emb, cl.ClusterParams(), cannot_link=[(0, 5)])
    assert labels[0] != labels[5]
    # the face constrained against the others leaves; the others stay together (whatever the id order)
    assert cl.enforce_cannot_links(np.zeros(4, np.int64), [(0, 1), (0, 2), (0, 3)]).tolist() == [1, 0, 0, 0]
    assert cl.enforce_cannot_links(np.zeros(4, np.int64), [(0, 3), (1, 3), (2, 3)]).tolist() == [0, 0, 0, 1]


def test_merge_groups_join_the_clusters_their_faces_are_in() -> None:
    emb, who = synthetic(30, 10, 0.03, seed=5)  # three people, about ten faces each
    assert len(set(cl.cluster(emb, cl.ClusterParams(threshold=0.8)).tolist())) == 3
    first, second, third = (np.flatnonzero(who == p) for p in range(3))
    group = [int(first[0]), int(first[1]), int(second[0])]  # a user merged a cluster of person 0 with one of 1
    labels = cl.cluster(emb, cl.ClusterParams(threshold=0.8), must_link=[group])
    assert len({labels[i] for i in [*first, *second]}) == 1 and labels[third[0]] != labels[first[0]]
    assert len(set(labels[third].tolist())) == 1
    # a cannot-link against a merged face moves the other face, not the merged one
    labels = cl.cluster(emb, cl.ClusterParams(threshold=0.8), [(int(first[0]), int(second[5]))], [group])
    assert labels[first[0]] == labels[second[0]] == labels[first[1]] != labels[second[5]]
    assert cl.join_groups(np.array([0, 1, 2, 3]), [[0, 2], [2, 3]]).tolist() == [0, 1, 0, 0]


def test_a_face_taken_out_then_merged_elsewhere_takes_its_group_along() -> None:
    """A user took face x out of a cluster of person P ("not this person"), merged it with a cluster D of
    person Q (a group), and merged the P cluster with another P cluster (a second group). P and Q look alike, so
    the whispers put everyone in one cluster: the constraints must split it along the groups (x with D, P apart),
    not take x alone out of its group and leave D with P."""
    rng = np.random.default_rng(0)
    base = rng.standard_normal(128)
    centres = [base / np.linalg.norm(base) + 0.2 * d / np.linalg.norm(d) for d in rng.standard_normal((2, 128))]

    def faces(person: int, n: int) -> np.ndarray:
        x = centres[person] / np.linalg.norm(centres[person]) + rng.standard_normal((n, 128)) * 0.02
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    emb = np.vstack([faces(0, 8), faces(1, 5)]).astype(np.float32)  # P: 0-7 (C: 0-4, E: 5-7); x: 8; D: 9-12
    assert len(set(cl.cluster(emb, cl.ClusterParams(threshold=0.8)).tolist())) == 1  # look-alikes: one cluster
    taken_out = [(8, c) for c in range(5)]
    labels = cl.cluster(emb, cl.ClusterParams(threshold=0.8), taken_out, [[8, 9, 10, 11, 12], list(range(8))])
    assert len(set(labels[8:].tolist())) == 1 and len(set(labels[:8].tolist())) == 1 and labels[0] != labels[8]


def test_vote_takes_the_heaviest_cluster_within_the_threshold() -> None:
    assert cl.vote([1, 2, 2], [0.3, 0.5, 0.6], 0.8) == 2
    assert cl.vote([1, 2], [0.9, 1.0], 0.8) is None
    assert cl.vote([], [], 0.8) is None


def test_scores_of_known_partitions() -> None:
    truth = np.array([0, 0, 0, 1, 1, 2])
    perfect = scores(truth, np.array([5, 5, 5, 7, 7, -1]))
    assert perfect["pair_precision"] == perfect["pair_recall"] == perfect["bcubed_f"] == 1.0
    merged = scores(truth, np.zeros(6, np.int64))
    assert merged["pair_recall"] == 1.0 and merged["pair_precision"] == 4 / 15
