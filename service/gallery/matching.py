"""Person-level scores: how far a probe face is from a *subject*, using all of the subject's faces.

Every rule gives an L2 distance in [0, 2] between unit vectors (lower = more alike), so thresholds, the
similarity ``1 - d**2 / 2`` and the calibration tables apply unchanged:

* ``nearest``: the distance to the subject's nearest face (one chance of a false match per *face*);
* ``template``: the distance to the subject's template, the normalised mean of its face embeddings (one chance
  per *subject*: a second or third photo makes the template better, not the false-match odds worse);
* ``weighted``: the same with each face weighted by its quality (:func:`quality_weight`);
* ``combined``: the mean of ``nearest`` and ``template``.

:data:`RULE` is the one the service uses, chosen by measurement on LFW (``bench/openset.py``, docs/OPENSET.md).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

Rule = Literal["nearest", "template", "weighted", "combined"]
RULES: tuple[Rule, ...] = ("nearest", "template", "weighted", "combined")
RULE: Rule = "template"
"""The subject score of identify and verify-against-subject, and the one the calibration tables are fitted for."""


def quality_weight(quality: Mapping[str, Any] | None) -> float:
    """A face's weight in a quality-weighted template: ``min(1, face_size / 100 px) * max(cos(yaw), 0.2)``
    (1 when unknown); a small or turned face counts less."""
    if not quality:
        return 1.0
    size = quality.get("face_size")
    yaw = quality.get("yaw")
    w = 1.0
    if isinstance(size, int | float) and math.isfinite(size):
        w *= min(1.0, max(float(size), 1.0) / 100.0)
    if isinstance(yaw, int | float) and math.isfinite(yaw):
        w *= max(math.cos(math.radians(float(yaw))), 0.2)
    return w


def template(embeddings: npt.NDArray[np.float32], weights: Sequence[float] | None = None) -> npt.NDArray[np.float32]:
    """The unit-norm (weighted) mean of a subject's (n, d) face embeddings."""
    x = np.asarray(embeddings, np.float32)
    w = np.ones(len(x), np.float32) if weights is None else np.asarray(weights, np.float32)
    mean = (w[:, None] * x).sum(axis=0)
    norm = float(np.linalg.norm(mean))
    return (mean / norm if norm > 0 else x[0]).astype(np.float32)


def l2_matrix(a: npt.NDArray[np.floating[Any]], b: npt.NDArray[np.floating[Any]]) -> npt.NDArray[np.float64]:
    """(m, n) L2 distances between unit rows of ``a`` (m, d) and ``b`` (n, d), in float64."""
    sim = np.asarray(a, np.float64) @ np.asarray(b, np.float64).T
    return np.asarray(np.sqrt(np.clip(2.0 - 2.0 * sim, 0.0, 4.0)))


def subject_distances(
    probes: npt.NDArray[np.float32],
    embeddings: npt.NDArray[np.float32],
    *,
    rule: Rule = RULE,
    weights: Sequence[float] | None = None,
) -> npt.NDArray[np.float64]:
    """The distance of each probe row (m, d) to one subject with face embeddings (n, d) under ``rule``: (m,).
    ``weights`` (one per face) are used by ``weighted`` only."""
    if len(embeddings) == 0:
        raise ValueError("a subject needs at least one face")
    if rule == "nearest":
        return l2_matrix(probes, embeddings).min(axis=1)
    if rule == "template":
        return l2_matrix(probes, template(embeddings)[None])[:, 0]
    if rule == "weighted":
        return l2_matrix(probes, template(embeddings, weights)[None])[:, 0]
    if rule == "combined":
        return 0.5 * (l2_matrix(probes, embeddings).min(axis=1) + l2_matrix(probes, template(embeddings)[None])[:, 0])
    raise ValueError(f"unknown rule {rule!r}")
