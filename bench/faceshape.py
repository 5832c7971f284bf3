"""LFW-shaped synthetic faces: the covariance structure of real FaceNet embeddings, for benchmarks at 1M faces.

The default generator of ``bench/gallery.py`` draws identity centres and within-identity noise isotropically
in all 128 dimensions. Real FaceNet embeddings are not isotropic: on LFW their variance is spread over ~47
effective dimensions (participation ratio of the covariance spectrum), which is what approximate-nearest-
neighbour graphs exploit. ``fit_shape`` fits, from real unit embeddings with person labels:

- the within-person covariance ``S_w`` (pooled over people with >= 2 faces, unbiased: divided by faces - people),
- the between-person covariance ``S_b = S_total - S_w`` (negative eigenvalues clipped to 0),

and ``FaceShape`` draws an identity centre as ``mean + B z`` and a face of it as ``normalise(centre + W g)``
(``B B^T = S_b``, ``W W^T = S_w``, ``z, g`` standard normal), so same-person and different-person distances
and the spectrum follow the data the shape was fitted on. Benchmarks report which generator they used.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

F32 = npt.NDArray[np.float32]


@dataclass(frozen=True)
class FaceShape:
    """Mean (128,) and square-root factors (128, 128) of the between- and within-person covariances."""

    mean: F32
    between: F32
    within: F32
    source: str

    def centres(self, rng: np.random.Generator, count: int) -> F32:
        """``count`` identity centres (not unit length; a face is normalised after its noise is added)."""
        z = rng.standard_normal((count, len(self.mean)), np.float32)
        return (self.mean + z @ self.between.T).astype(np.float32)

    def noise(self, rng: np.random.Generator, count: int) -> F32:
        """Within-person deviations to add to ``count`` centres."""
        g = rng.standard_normal((count, len(self.mean)), np.float32)
        return (g @ self.within.T).astype(np.float32)


def _factor(cov: npt.NDArray[np.float64]) -> F32:
    """Symmetric square root of a covariance with its negative eigenvalues clipped to 0."""
    values, vectors = np.linalg.eigh((cov + cov.T) / 2)
    return ((vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T).astype(np.float32)


def participation_ratio(cov: npt.NDArray[np.float64]) -> float:
    """Effective number of dimensions of a covariance: (sum of eigenvalues)^2 / sum of squares (128 = isotropic)."""
    values = np.linalg.eigvalsh(cov)
    return float(values.sum() ** 2 / (values**2).sum())


def fit_shape(npz: Path) -> FaceShape:
    """Fit a shape from ``bench/lfw_embeddings.py``'s output (``embeddings`` unit rows, ``names`` labels;
    rows with a non-finite or zero embedding, i.e. no face found, are left out)."""
    data = np.load(npz)
    x = data["embeddings"].astype(np.float64)
    names = data["names"]
    ok = np.isfinite(x).all(axis=1) & (np.linalg.norm(x, axis=1) > 0.5)
    x, names = x[ok], names[ok]
    _, person = np.unique(names, return_inverse=True)
    counts = np.bincount(person)
    sums = np.zeros((len(counts), x.shape[1]))
    np.add.at(sums, person, x)
    residual = x - (sums / counts[:, None])[person]
    multi = counts[person] >= 2
    within = residual[multi].T @ residual[multi] / (multi.sum() - (counts >= 2).sum())
    total = np.cov(x.T)
    return FaceShape(
        mean=x.mean(axis=0).astype(np.float32),
        between=_factor(total - within),
        within=_factor(within),
        source=f"{Path(npz).name}: {len(x)} faces of {len(counts)} people",
    )
