"""Distances between unit embeddings. L2 in [0, 2] (0 = identical); cosine similarity = 1 - d**2 / 2."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt


def distance(a: npt.NDArray[np.float32], b: npt.NDArray[np.float32]) -> float:
    """L2 distance between two unit embeddings, in [0, 2]."""
    return float(np.linalg.norm(np.asarray(a, dtype=np.float32) - np.asarray(b, dtype=np.float32)))


def similarity(a: npt.NDArray[np.float32], b: npt.NDArray[np.float32]) -> float:
    """Cosine similarity of two unit embeddings, in [-1, 1]; equals ``1 - distance(a, b)**2 / 2``."""
    return float(np.dot(np.asarray(a, dtype=np.float32), np.asarray(b, dtype=np.float32)))


def pairwise_distances(a: npt.NDArray[np.float32], b: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """All L2 distances between rows of ``a`` (N, D) and ``b`` (M, D), unit vectors -> (N, M) in [0, 2]."""
    sq = np.clip(2.0 - 2.0 * (np.asarray(a, np.float32) @ np.asarray(b, np.float32).T), 0.0, 4.0)
    return np.sqrt(sq).astype(np.float32)


def distance_to_similarity(d: float) -> float:
    """Cosine similarity for an L2 distance between unit vectors: ``1 - d**2 / 2``."""
    return 1.0 - d * d / 2.0
