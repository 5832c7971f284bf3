"""Open-set calibration: how often a stranger is wrongly named, by threshold and gallery size, per model.

A probe of someone *not* enrolled is falsely identified when its best subject score (:mod:`matching`, rule
:data:`matching.RULE`) over a gallery of ``N`` subjects is at or below the threshold ``t``. Strangers differ:
some resemble many people, most resemble nobody. So the false-identification rate is modelled per probe::

    FIR(t, N) = mean over probes p of 1 - (1 - f_p(t)) ** N

where ``f_p(t)`` is the fraction of *other people's* subjects within ``t`` of probe ``p``, measured on people the
gallery does not hold (the "per-probe mixture": subjects are independent chances given the probe). ``N`` counts
what the rule compares against: subjects for the template rules, faces for ``nearest``
(:func:`comparisons`).

Where data is thin the estimate is deliberately high (conservative): each probe's ``f_p`` is shrunk towards the
pooled rate with :data:`PRIOR` pseudo-comparisons, so a probe that matched none of the ~2,900 fitted subjects
still counts as matching some of a 5,000-person gallery; for galleries much larger than the fitted population
and for FIR targets below ~1/probes, the estimate rests on that prior (docs/OPENSET.md).

Tables are per model (:class:`Calibration`, one ``.npz``): the pretrained model's ship in this package
(``tables/<model_id>.npz``, fitted on half of LFW's people); ``facerec calibrate`` and ``facerec train`` write
``<cache>/calibration/<model_id>.npz`` for any model. A model without tables has no estimate: identify then uses
its fixed threshold and says ``uncalibrated``; another model's tables are never used.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, TypeVar, cast

import numpy as np
import numpy.typing as npt

from service.gallery.matching import RULE, Rule, l2_matrix, template

T = TypeVar("T")

SHIPPED_DIR = Path(__file__).with_name("tables")
"""The tables shipped with the package, one ``<model_id>.npz`` each."""

PRIOR = 200.0
"""Weight, in comparisons, of the pooled rate in each probe's shrunk rate (module docstring)."""

GRID = np.round(np.arange(0.30, 1.6001, 0.005), 4)
"""Threshold grid of fitted tables (L2)."""

MAX_PHOTOS = 3
"""A fitted subject holds 1 to this many photos (as the LFW protocol's galleries do)."""


@dataclass(frozen=True)
class Calibration:
    """Per-probe impostor counts of one model and one rule: ``counts[p, j]`` of the ``n[p]`` subjects of other
    people compared with probe ``p`` were within ``thresholds[j]`` (ascending: L2 distances, or normalised scores
    for a :class:`normalisation.Normalisation`'s table)."""

    model_id: str
    rule: str
    thresholds: npt.NDArray[np.float64]
    counts: npt.NDArray[np.int64]
    n: npt.NDArray[np.int64]
    source: str
    people: int
    prior: float = PRIOR
    _solved: dict[tuple[float, int], float] = field(default_factory=dict, init=False, repr=False, compare=False)
    """:meth:`threshold_for_fir`'s answers (every identify asks the same question until the gallery grows)."""

    def _counts_at(self, threshold: float) -> npt.NDArray[np.float64]:
        t = self.thresholds
        if threshold < t[0]:
            return np.zeros(len(self.n))
        if threshold >= t[-1]:
            return self.counts[:, -1].astype(np.float64)
        j = int(np.searchsorted(t, threshold, side="right")) - 1
        frac = (threshold - t[j]) / (t[j + 1] - t[j])
        return np.asarray(self.counts[:, j] * (1 - frac) + self.counts[:, j + 1] * frac, np.float64)

    def pooled_rate(self, threshold: float) -> float:
        """Fraction of all impostor comparisons within ``threshold`` (the FAR of one comparison)."""
        return float(self._counts_at(threshold).sum() / max(int(self.n.sum()), 1))

    def false_identification_rate(self, threshold: float, comparisons: int) -> float:
        """Estimated chance that a stranger's best score among ``comparisons`` subjects (or faces, for the
        ``nearest`` rule) is within ``threshold``."""
        if comparisons <= 0:
            return 0.0
        c = self._counts_at(threshold)
        pooled = float(c.sum() / max(int(self.n.sum()), 1))
        f = np.clip((c + self.prior * pooled) / (self.n + self.prior), 0.0, 1.0 - 1e-12)
        return float(np.mean(-np.expm1(comparisons * np.log1p(-f))))

    def threshold_for_fir(self, target: float, comparisons: int) -> float:
        """The largest threshold whose estimated FIR at ``comparisons`` is ``<= target`` (bisection, ~2 ms;
        remembered per ``(target, comparisons)``)."""
        if not 0.0 < target < 1.0:
            raise ValueError("target_fir must be in (0, 1)")
        n = max(int(comparisons), 1)
        known = self._solved.get((target, n))
        if known is not None:
            return known
        lo, hi = min(0.0, float(self.thresholds[0])), max(2.0, float(self.thresholds[-1]))
        for _ in range(40):
            mid = (lo + hi) / 2
            if self.false_identification_rate(mid, n) <= target:
                lo = mid
            else:
                hi = mid
        if len(self._solved) >= 4096:  # a gallery growing by one subject at a time asks a new question each time
            self._solved.clear()
        self._solved[(target, n)] = lo
        return lo

    def save(
        self, path: Path, *, arrays: dict[str, npt.NDArray[Any]] | None = None, meta: dict[str, Any] | None = None
    ) -> None:
        """Write atomically (a temporary file renamed into place); ``arrays`` and ``meta``: more of both in the
        same file (a :class:`normalisation.Normalisation`'s cohort and ``k``)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        info = {"model_id": self.model_id, "rule": self.rule, "source": self.source, "people": self.people}
        info |= {"prior": self.prior, **(meta or {})}
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".npz.tmp")
        try:
            data: dict[str, Any] = {"thresholds": self.thresholds, "counts": self.counts.astype(np.uint32)}
            data |= {"n": self.n.astype(np.uint32), "meta": np.array(json.dumps(info)), **(arrays or {})}
            with os.fdopen(fd, "wb") as fh:
                np.savez_compressed(fh, **data)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    @classmethod
    def load(cls, path: Path) -> Calibration:
        return cls.read(path)[0]

    @classmethod
    def read(
        cls, path: Path, extra: tuple[str, ...] = ()
    ) -> tuple[Calibration, dict[str, npt.NDArray[Any]], dict[str, Any]]:
        """The table of ``path``, its ``extra`` arrays and its whole meta dict; ``ValueError`` if invalid."""
        with np.load(path, allow_pickle=False) as d:
            meta: dict[str, Any] = json.loads(str(d["meta"]))
            t = d["thresholds"].astype(np.float64)
            counts, n = d["counts"].astype(np.int64), d["n"].astype(np.int64)
            arrays = {name: d[name] for name in extra}
        if counts.shape != (len(n), len(t)) or not (np.diff(t) > 0).all() or (np.diff(counts, axis=1) < 0).any():
            raise ValueError(f"{path}: not a valid calibration table")
        model, rule, source, people = str(meta["model_id"]), str(meta["rule"]), str(meta["source"]), int(meta["people"])
        table = cls(model, rule, t, counts, n, source, people, float(meta.get("prior", PRIOR)))
        return table, arrays, meta


def user_tables_dir(cache: Path | None = None) -> Path:
    """``<FACEREC_CACHE or ~/.cache/facerec>/calibration``: tables written by ``facerec calibrate``/``train``."""
    from embeddings.weights import cache_dir

    return (cache or cache_dir()) / "calibration"


TABLES_SUFFIX = ".npz"
"""A model's calibration tables are ``<model_id>.npz`` (in :func:`user_tables_dir` or the shipped ones)."""


def tables_path(model_id: str, *, cache: Path | None = None, suffix: str = TABLES_SUFFIX) -> Path | None:
    """The table file ``<model_id><suffix>``: the user's (written by calibrate/train) before the shipped one;
    None if neither exists."""
    for path in (user_tables_dir(cache) / f"{model_id}{suffix}", SHIPPED_DIR / f"{model_id}{suffix}"):
        if path.is_file():
            return path
    return None


@lru_cache(maxsize=16)
def _read_cached(read: Callable[[Path], Any], path: str, _mtime_ns: int) -> Any:
    return read(Path(path))


def read_model_file(model_id: str, read: Callable[[Path], T], *, suffix: str, cache: Path | None = None) -> T | None:
    """``read`` of ``model_id``'s ``<model_id><suffix>`` file (:func:`tables_path`; re-read when the file
    changes), or None: no file, or an unreadable one."""
    path = tables_path(model_id, cache=cache, suffix=suffix)
    if path is None:
        return None
    try:
        return cast(T, _read_cached(read, str(path), path.stat().st_mtime_ns))
    except (OSError, ValueError, KeyError):
        return None


def load_calibration(model_id: str, *, cache: Path | None = None) -> Calibration | None:
    """The tables of ``model_id`` (re-read when the file changes), or None: no tables, unreadable ones, or
    tables fitted for another model or another rule than :data:`matching.RULE`."""
    cal = read_model_file(model_id, Calibration.load, suffix=TABLES_SUFFIX, cache=cache)
    return cal if cal is not None and cal.model_id == model_id and cal.rule == RULE else None


@dataclass(frozen=True)
class FitSample:
    """The people of a fit (:func:`sample_people`): ``x`` the (n, d) embeddings, ``labels`` each image's person
    0..people-1, ``enrolled`` per person the indices of its 1 to :data:`MAX_PHOTOS` random subject photos,
    ``picks`` the probe images' indices."""

    x: npt.NDArray[np.float32]
    labels: npt.NDArray[np.int64]
    people: int
    enrolled: list[npt.NDArray[np.int64]]
    picks: npt.NDArray[np.int64]


def sample_people(
    embeddings: npt.NDArray[np.float32], labels: npt.NDArray[Any], *, probes: int = 3000, max_per_person: int = 10,
    seed: int = 0, min_people: int = 2,
) -> FitSample:  # fmt: skip
    """Every person (one label each) becomes a subject of 1 to :data:`MAX_PHOTOS` random photos; up to ``probes``
    random images (at most ``max_per_person`` of one person) are the probes. ``ValueError`` below
    ``min_people`` people."""
    x = np.asarray(embeddings, np.float32)
    lab = np.unique(np.asarray(labels), return_inverse=True)[1]
    people = int(lab.max()) + 1 if len(lab) else 0
    if people < min_people:
        raise ValueError(f"calibration needs images of at least {min_people} people")
    rng = np.random.default_rng(seed)
    members = [np.flatnonzero(lab == i) for i in range(people)]
    enrolled = [rng.permutation(m)[: int(rng.integers(1, MAX_PHOTOS + 1))] for m in members]
    picks = np.concatenate([rng.permutation(m)[:max_per_person] for m in members])
    return FitSample(x, lab, people, enrolled, rng.permutation(picks)[:probes])


def fit_calibration(
    embeddings: npt.NDArray[np.float32],
    labels: npt.NDArray[Any],
    *,
    model_id: str,
    source: str,
    rule: Rule = RULE,
    probes: int = 3000,
    max_per_person: int = 10,
    seed: int = 0,
    prior: float = PRIOR,
    weights: npt.NDArray[np.float64] | None = None,
) -> Calibration:
    """Fit tables from labelled embeddings (one label per person; :func:`sample_people`): each probe image is
    compared with every *other* person's subject under ``rule`` (``weights``: one quality weight per image, for
    the ``weighted`` rule)."""
    fs = sample_people(embeddings, labels, probes=probes, max_per_person=max_per_person, seed=seed)
    x, enrolled, picks, people = fs.x, fs.enrolled, fs.picks, fs.people
    probe_lab = fs.labels[picks]
    if rule == "nearest":  # one comparison per face
        faces = np.concatenate(enrolled)
        owner = np.repeat(np.arange(people), [len(e) for e in enrolled])
        scores = l2_matrix(x[picks], x[faces])
    else:
        w = None if weights is None else [np.asarray(weights)[e] for e in enrolled]
        scores = subject_scores(x[picks], [x[e] for e in enrolled], rule=rule, weights=w)
        owner = np.arange(people)
    other = probe_lab[:, None] != owner[None, :]
    return table_from_scores(np.where(other, scores, np.inf), GRID, model_id, rule, source, people, prior)


def table_from_scores(
    scores: npt.NDArray[np.float64], grid: npt.NDArray[np.float64], model_id: str, rule: str, source: str,
    people: int, prior: float,
) -> Calibration:  # fmt: skip
    """A table from (probes, subjects) stranger scores (``inf`` where a pair is not a stranger pair): per probe,
    how many are within each threshold of ``grid``, of how many compared."""
    n = np.isfinite(scores).sum(axis=1).astype(np.int64)
    s = np.sort(scores, axis=1)
    counts = np.stack([np.searchsorted(row, grid, side="right") for row in s]).astype(np.int64)
    return Calibration(model_id, rule, np.asarray(grid, np.float64), counts, n, source, people, prior)


def subject_scores(
    probes: npt.NDArray[np.float32],
    subjects: list[npt.NDArray[np.float32]],
    *,
    rule: Rule,
    weights: list[npt.NDArray[np.float64]] | None = None,
) -> npt.NDArray[np.float64]:
    """(P, S) subject distances of each probe to each subject's faces under ``rule`` (vectorised; the same
    numbers as :func:`matching.subject_distances`); ``weights``: per subject, one per face (``weighted``)."""
    p = np.asarray(probes, np.float64)

    def l2(sim: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        return np.asarray(np.sqrt(np.clip(2.0 - 2.0 * sim, 0.0, 4.0)))

    def nearest() -> npt.NDArray[np.float64]:
        faces = np.concatenate(subjects).astype(np.float64)
        starts = np.cumsum([0] + [len(s) for s in subjects[:-1]])
        return l2(np.maximum.reduceat(p @ faces.T, starts, axis=1))

    def templates(w: list[npt.NDArray[np.float64]] | None = None) -> npt.NDArray[np.float64]:
        tm = np.stack([template(s, None if w is None else list(w[i])) for i, s in enumerate(subjects)])
        return l2(p @ tm.astype(np.float64).T)

    if rule == "nearest":
        return nearest()
    if rule == "template":
        return templates()
    if rule == "weighted":
        if weights is None:
            raise ValueError("the weighted rule needs face weights")
        return templates(weights)
    if rule == "combined":
        return 0.5 * (nearest() + templates())
    raise ValueError(f"unknown rule {rule!r}")


def open_set_estimate(calibration: Calibration | None, threshold: float, subjects: int, faces: int) -> float | None:
    """The FIR estimate at ``threshold`` for a gallery of ``subjects`` subjects holding ``faces`` faces (what the
    rule compares against, :func:`comparisons`); None without tables."""
    if calibration is None or subjects <= 0:
        return None
    return calibration.false_identification_rate(threshold, comparisons(calibration.rule, subjects, faces))


def comparisons(rule: str, subjects: int, faces: int) -> int:
    """What the FIR model counts for a gallery: faces for the ``nearest`` rule, subjects for the others."""
    return max(faces, subjects) if rule == "nearest" else subjects


def fir_from_far(far: float, comparisons: int) -> float:
    """``1 - (1 - far) ** comparisons`` (independent comparisons), computed stably."""
    if comparisons <= 0 or far <= 0.0:
        return 0.0
    if far >= 1.0:
        return 1.0
    return float(-math.expm1(comparisons * math.log1p(-far)))
