"""Cohort score normalisation: how unusual a probe-subject distance is for *these two* faces.

Some faces sit in crowded parts of the embedding space (near many people), others in empty parts; a raw L2
threshold treats them alike, so a stranger with a "common" face is named too often and a genuine probe of an
"unusual" face is turned away. Each face is therefore measured against a fixed *cohort* of background people
(templates of people who are not in the gallery, shipped or fitted per model with the calibration tables): its
*spread* is the mean L2 distance to its :data:`COHORT_K` nearest cohort templates. The normalised score of a
probe ``p`` and a subject with template ``t`` (both unit vectors) is::

    score = d(p, t) - (spread(p) + spread(t)) / 2

(symmetric cohort normalisation, lower = more alike; in practice in about [-1, 0.6]). Chosen on LFW people the
measured galleries never hold (bench/openset.py, docs/OPENSET.md) over probe-only and subject-only
normalisation, other ``k`` and s-norm (which divides by the cohort's spread of distances too, and did worse).

The decision threshold and the FIR estimate of a normalised score come from :class:`Normalisation`'s own table
(a :class:`calibration.Calibration` on the score's grid), fitted with :func:`fit_normalisation` so that every
stranger score it counts is computed as identify computes it: against a cohort that holds neither the probe's
person nor the subject's.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from service.gallery.calibration import PRIOR, Calibration, FitSample, l2_matrix, read_model_file, table_from_scores
from service.gallery.matching import RULE, template

COHORT_K = 10
"""Nearest cohort templates whose mean distance is a face's spread."""

SAME_PERSON_L2 = 0.7
"""A cohort template closer than this (L2) to a face is taken to be that face's own person and is not counted in
its spread: the shipped cohort holds public people, who may be enrolled or probed too, and one's own template
would shrink the spread (by ~0.07 on LFW) and so push that person's scores up. Other people come this close to
an LFW image's nearest cohort template in under 1% of images (bench/openset.py's embeddings), so the spreads of
everyone else barely change."""

SCORE_GRID = np.round(np.arange(-1.2, 0.8001, 0.005), 4)
"""Threshold grid of the normalised score's table."""

SPREAD_CACHE_SIZE = 65_536
"""Subject spreads a :class:`Normalisation` keeps (least recently used dropped first; the memory of a full cache:
``bench/normalisation_cost.py``, docs/OPENSET.md)."""

SUFFIX = ".cohort.npz"
"""A model's normalisation file is ``<model_id>.cohort.npz`` next to its ``<model_id>.npz`` tables."""


def spreads(
    vectors: npt.NDArray[np.floating[Any]], cohort: npt.NDArray[np.floating[Any]], k: int = COHORT_K
) -> npt.NDArray[Any]:
    """The mean L2 distance of each unit row of ``vectors`` (m, d) to its ``k`` nearest rows of ``cohort``: (m,)."""
    d = _others(l2_matrix(vectors, cohort))
    k = min(k, d.shape[1])
    near = np.partition(d, k - 1, axis=1)[:, :k]
    # a face with fewer than k others in the cohort (a tiny cohort): the mean of those it has
    finite = np.isfinite(near)
    return np.asarray(np.where(finite, near, 0.0).sum(axis=1) / np.maximum(finite.sum(axis=1), 1), np.float64)


def _others(d: npt.NDArray[Any]) -> npt.NDArray[np.float64]:
    """Cohort distances with the face's own person (closer than :data:`SAME_PERSON_L2`) set to ``inf``."""
    return np.asarray(np.where(d < SAME_PERSON_L2, np.inf, d), np.float64)


def normalised_scores(
    distances: npt.NDArray[np.float64], probe_spread: npt.NDArray[np.float64], subject_spread: npt.NDArray[np.float64]
) -> npt.NDArray[np.float64]:
    """(m, s) scores from (m, s) L2 distances, the probes' (m,) and the subjects' (s,) spreads."""
    return np.asarray(distances - 0.5 * (probe_spread[:, None] + subject_spread[None, :]), np.float64)


class SpreadCache:
    """:func:`spreads` of subject templates against one ``cohort``, each computed once per template *content*.

    The key is a 128-bit BLAKE2b digest of the template row (its dtype and bytes), not the subject: a subject whose
    template changes (a face enrolled or erased, by this replica or another) is a new key and never gets a stale
    spread, and nothing needs to be told of gallery changes (each replica keeps its own, in memory). Only the digest
    is kept, not the template: an erased subject's embedding does not linger here. At
    most ``size`` spreads, least recently used dropped first; thread-safe (spreads are computed outside the lock,
    a row computed twice by two threads gets the same value)."""

    def __init__(self, cohort: npt.NDArray[np.floating[Any]], k: int, size: int = SPREAD_CACHE_SIZE) -> None:
        self._cohort, self._k, self._size = cohort, k, size
        self._spreads: OrderedDict[bytes, float] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._spreads)

    def __call__(self, templates: npt.NDArray[np.floating[Any]]) -> npt.NDArray[np.float64]:
        """The (m,) spreads of the (m, d) template rows, equal to ``spreads(templates, cohort, k)``."""
        rows = np.ascontiguousarray(templates)
        dtype = rows.dtype.str.encode()
        keys = [hashlib.blake2b(dtype + row.tobytes(), digest_size=16).digest() for row in rows]
        out = np.empty(len(keys), np.float64)
        todo: list[int] = []
        with self._lock:
            for i, key in enumerate(keys):
                known = self._spreads.get(key)
                if known is None:
                    todo.append(i)
                else:
                    self._spreads.move_to_end(key)
                    out[i] = known
        if todo:
            out[todo] = spreads(rows[todo], self._cohort, self._k)
            with self._lock:
                for i in todo:
                    self._spreads[keys[i]] = float(out[i])
                while len(self._spreads) > self._size:
                    self._spreads.popitem(last=False)
        return out


@dataclass(frozen=True)
class Normalisation:
    """A model's cohort (``cohort``: (C, d) unit templates, ``k``) and the FIR table of its normalised score; the
    subjects' spreads are kept (:class:`SpreadCache`) for as long as this object lives (:func:`load_normalisation`
    returns the same one until the file changes)."""

    cohort: npt.NDArray[np.float32]
    k: int
    table: Calibration
    subject_spreads: SpreadCache = field(init=False, repr=False, compare=False)
    """(m,) spreads of (m, d) subject templates, each computed once per template content."""
    _cohort64: npt.NDArray[np.float64] = field(init=False, repr=False, compare=False)
    """The cohort as float64, what :func:`l2_matrix` computes in (cast once, not on every call)."""

    def __post_init__(self) -> None:
        cohort64 = np.asarray(self.cohort, np.float64)
        object.__setattr__(self, "_cohort64", cohort64)
        object.__setattr__(self, "subject_spreads", SpreadCache(cohort64, self.k))

    @property
    def model_id(self) -> str:
        return self.table.model_id

    def probe_spreads(self, probes: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
        """(m,) spreads of (m, d) probe rows (computed on every call)."""
        return spreads(probes, self._cohort64, self.k)

    def scores(self, probes: npt.NDArray[np.float32], templates: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
        """(m, s) normalised scores of probe rows against subject template rows (the probes' spreads computed,
        the templates' from :attr:`subject_spreads`)."""
        d = l2_matrix(probes, templates)
        return normalised_scores(d, self.probe_spreads(probes), self.subject_spreads(templates))

    def save(self, path: Path) -> None:
        """Write atomically: the table's file with the cohort (as float16, what :meth:`load` and the fit use)."""
        self.table.save(path, arrays={"cohort": self.cohort.astype(np.float16)}, meta={"k": self.k})

    @classmethod
    def load(cls, path: Path) -> Normalisation:
        table, arrays, meta = Calibration.read(path, extra=("cohort",))
        cohort = arrays["cohort"].astype(np.float32)
        if cohort.ndim != 2 or len(cohort) < int(meta["k"]):
            raise ValueError(f"{path}: the cohort is smaller than k")
        return cls(cohort, int(meta["k"]), table)


def load_normalisation(model_id: str, *, cache: Path | None = None) -> Normalisation | None:
    """``model_id``'s normalisation (the user's file before the shipped one; re-read when it changes), or None:
    none, unreadable, or fitted for another model or rule."""
    norm = read_model_file(model_id, Normalisation.load, suffix=SUFFIX, cache=cache)
    return norm if norm is not None and norm.model_id == model_id and norm.table.rule == RULE else None


def _loo_spread(d: npt.NDArray[np.float64], sorted_k1: npt.NDArray[np.float64], k: int) -> npt.NDArray[np.float64]:
    """Spreads with one cohort member left out: ``d[i, j]`` the left-out member's distance from face ``i``,
    ``sorted_k1[i]`` face ``i``'s ``k + 1`` smallest cohort distances (ascending)."""
    base = sorted_k1[:, :k].sum(axis=1, keepdims=True)
    inside = d <= sorted_k1[:, k - 1 : k]
    return np.asarray(np.where(inside, base - d + sorted_k1[:, k : k + 1], base) / k, np.float64)


def stranger_scores(
    probes: npt.NDArray[np.float32], owners: npt.NDArray[np.int64], cohort: npt.NDArray[np.float32], k: int
) -> npt.NDArray[np.float64]:
    """(P, S) normalised scores of probe rows against the ``cohort`` templates as gallery subjects, each pair's
    spreads computed without the probe's own person (``owners[p]``, a cohort row) and without that subject, as
    identify computes a stranger's score against a gallery the cohort does not hold; own pairs are ``inf``."""
    rows = np.arange(len(probes))
    d = l2_matrix(probes, cohort)  # probe -> subject distances, also probe -> cohort
    masked = _others(d)  # as spreads() counts them
    masked[rows, owners] = np.inf  # the probe's own person is never in its cohort
    probe_spread = _loo_spread(masked, np.sort(np.partition(masked, k, axis=1)[:, : k + 1], axis=1), k)
    tt = _others(l2_matrix(cohort, cohort))
    np.fill_diagonal(tt, np.inf)  # a subject is never in its own cohort
    tt_k1 = np.sort(np.partition(tt, k, axis=1)[:, : k + 1], axis=1)
    # each subject's spread without the probe's person: tt[s, owners[p]] left out of subject s's sorted row
    subject_spread = _loo_spread(tt[:, owners], tt_k1, k).T
    scores = d - 0.5 * (probe_spread + subject_spread)
    scores[rows, owners] = np.inf
    return np.asarray(scores, np.float64)


def fit_normalisation(
    sample: FitSample, *, model_id: str, source: str, k: int = COHORT_K, prior: float = PRIOR
) -> Normalisation:
    """Cohort and table from a :func:`calibration.sample_people` sample: each person's subject template is a
    cohort member *and* a fitted subject; each probe image is scored against every other person's subject with
    the cohort minus the probe's person and minus that subject (:func:`stranger_scores`: in service the cohort
    holds neither the stranger nor the gallery's people), counted on :data:`SCORE_GRID` as
    :func:`calibration.fit_calibration` counts L2 distances. ``ValueError`` below ``k + 3`` people."""
    if sample.people < k + 3:
        raise ValueError(f"normalisation needs images of at least {k + 3} people")
    cohort = np.stack([template(sample.x[e]) for e in sample.enrolled])
    cohort = cohort.astype(np.float16).astype(np.float32)  # exactly what a saved file holds
    own = sample.labels[sample.picks]
    scores = stranger_scores(sample.x[sample.picks], own, cohort, k)
    table = table_from_scores(scores, SCORE_GRID, model_id, RULE, source, sample.people, prior)
    return Normalisation(cohort, k, table)
