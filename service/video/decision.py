"""One decision per track: embed a track's best views and let them vote under identify's open-set threshold.

Each view's nearest subject (under identify's person-level rule, :func:`service.recognition.rank_subjects`) is a
vote when it is within the threshold ``POST /v1/identify`` would use at this gallery size
(:func:`service.recognition.open_set_policy`: the model's own normalisation or calibration tables, or the fixed
threshold; :meth:`~service.recognition.OpenSetPolicy.accepts`). The
subject with the most votes is the track's identity only with a strict majority of all views; otherwise the track
is unknown (``subject_id`` None). The reported ``distance`` is the median of the winner's distances (unknown: the
median nearest distance), and ``estimated_false_identification_rate`` is identify's per-probe estimate at that
threshold and gallery size: the chance that one stranger's view is matched to someone. A stranger's track is
named only when most of its views are, so the per-track rate is at most that figure.
"""

from __future__ import annotations

import statistics
from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from service.recognition import open_set_policy, rank_subjects


@dataclass(frozen=True, slots=True)
class Vote:
    """The outcome of voting: ``subject_id``/``name`` None for unknown; ``distance`` L2 in [0, 2]."""

    subject_id: str | None
    name: str | None
    distance: float | None
    votes: int
    views: int
    threshold: float
    estimated_fir: float | None


def vote(
    embeddings: npt.NDArray[np.float32], *, gallery: Any, model_id: str, fixed_threshold: float, max_fir: float | None
) -> Vote:
    """Decide one track from its views' unit embeddings ``(N, 128)``; see the module docstring."""
    policy = open_set_policy(gallery, model_id=model_id, fixed=fixed_threshold, max_fir=max_fir)
    choice, fir, size = policy.choice, policy.estimated_fir, policy.faces
    n = int(embeddings.shape[0])
    probes = np.asarray(embeddings, dtype=np.float32)
    norm = policy.normalisation
    hits = rank_subjects(gallery, probes, model_id=model_id, top_k=1, normalisation=norm) if size and n else []
    nearest = [c[0] for c in hits if c]
    within = [c for c in nearest if policy.accepts(c)]
    counts = Counter(c.subject_id for c in within)
    if counts:
        subject_id, count = counts.most_common(1)[0]
        if count * 2 > n:
            mine = [c for c in within if c.subject_id == subject_id]
            d = float(statistics.median(c.distance for c in mine))
            return Vote(subject_id, mine[0].subject_name, d, count, n, choice.threshold, fir)
    d_any = float(statistics.median(c.distance for c in nearest)) if nearest else None
    return Vote(None, None, d_any, 0, n, choice.threshold, fir)
