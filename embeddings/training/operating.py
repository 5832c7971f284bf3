"""Operating-point figures of a set of labelled embeddings, with bootstrap intervals over people.

Conventions: embeddings are unit vectors, distances L2 in [0, 2], ``distance <= t`` = same person. Every person
has >= 2 images. From one set of embeddings with person labels:

- verification, on ALL pairs of images: same-person pairs vs different-person pairs.
  ``accuracy`` is the balanced accuracy ``(TAR + TNR) / 2`` at the threshold that maximises it (what the LFW
  protocol's 50/50 pairs measure); ``tar_at_far_1e-3`` the share of same-person pairs accepted at the threshold
  where at most 0.1% of different-person pairs are.
- open-set identification (leave one person out): the first image of every person is enrolled, the others are
  probes. A probe's mated search is against the whole gallery (a hit = its own person ranked first AND within the
  threshold); its non-mated search is against the gallery without its own person (a false positive = anything
  within the threshold). ``tpir_at_fpir_1e-2`` is the hit rate at the threshold where 1% of non-mated searches
  give a false positive.
- ``score``: the mean of TAR@FAR 1e-3 and TPIR@FPIR 1%, the strict operating points open-set serving uses; model
  selection and the gate use it.

Intervals: a bootstrap over PEOPLE (people drawn with replacement; a person drawn k times weighs k in every pair
and probe it takes part in; the gallery stays fixed), 95% percentile intervals. Two models on the same images are
compared with a PAIRED bootstrap (the same draws for both), so the interval of the difference is much tighter
than those of the figures.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

FAR = 1e-3
FPIR = 1e-2
METRICS = ("accuracy", "tar_at_far_1e-3", "tpir_at_fpir_1e-2", "score")

Floats = npt.NDArray[np.float64]


NEG_TAIL_SHARE = 0.01
"""Share of the closest different-person pairs kept for TAR@FAR 1e-3 (10x the FAR: a bootstrap re-weighting
never moves the 1e-3 quantile past it)."""
NEG_SAMPLE = 50_000
"""Different-person pairs sampled (seeded) for the accuracy curve; every same-person pair is kept."""


@dataclass(frozen=True)
class Scored:
    """Distances of one model on one labelled set, arranged for weighted (bootstrap) figures.

    Pairs are kept as the persons they join so a bootstrap only re-weights them. Arrays are sorted by distance.
    ``tail_*``: the closest different-person pairs (TAR@FAR); ``samp_*``: a sample of them (accuracy);
    ``images`` (n_people,): images per person, for the exact total weight of different-person pairs.
    """

    pos_d: Floats
    pos_p: npt.NDArray[np.int64]
    tail_d: Floats
    tail_pa: npt.NDArray[np.int64]
    tail_pb: npt.NDArray[np.int64]
    samp_d: Floats
    samp_pa: npt.NDArray[np.int64]
    samp_pb: npt.NDArray[np.int64]
    mate_d: Floats
    mate_hit: npt.NDArray[np.bool_]
    non_d: Floats
    probe_p: npt.NDArray[np.int64]
    images: Floats
    n_negative: int

    @property
    def n_people(self) -> int:
        return len(self.images)


def _sorted_by(d: Floats, *arrays: npt.NDArray[Any]) -> list[npt.NDArray[Any]]:
    order = np.argsort(d, kind="stable")
    return [d[order], *(a[order] for a in arrays)]


def score_set(emb: npt.NDArray[np.float32], labels: npt.NDArray[np.int64], *, seed: int = 0) -> Scored:
    """Every pair and every open-set search of ``emb`` (N, D) unit vectors with person ``labels`` (N,)."""
    _, lab = np.unique(np.asarray(labels, dtype=np.int64), return_inverse=True)
    lab = lab.astype(np.int64)
    n_people = int(lab.max()) + 1 if len(lab) else 0
    e = np.asarray(emb, dtype=np.float32)
    dist = np.sqrt(np.maximum(2.0 - 2.0 * (e @ e.T).astype(np.float64), 0.0))
    iu, ju = np.triu_indices(len(e), k=1)
    d = dist[iu, ju]
    same = lab[iu] == lab[ju]
    pos_d, pos_p = _sorted_by(d[same], lab[iu][same])
    nd, na, nb = d[~same], lab[iu][~same], lab[ju][~same]
    k = min(len(nd), max(2000, int(np.ceil(NEG_TAIL_SHARE * len(nd)))))
    part = np.argpartition(nd, k - 1)[:k] if 0 < k < len(nd) else np.arange(len(nd))
    tail_d, tail_pa, tail_pb = _sorted_by(nd[part], na[part], nb[part])
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(nd), NEG_SAMPLE, replace=False) if len(nd) > NEG_SAMPLE else np.arange(len(nd))
    samp_d, samp_pa, samp_pb = _sorted_by(nd[pick], na[pick], nb[pick])
    # gallery: the first image of each person; probes: the rest
    _, first = np.unique(lab, return_index=True)
    g_person = lab[first]
    probes = np.setdiff1d(np.arange(len(e)), first)
    to_gallery = dist[np.ix_(probes, first)]
    own = g_person[None, :] == lab[probes][:, None]
    mate_d = np.where(own, to_gallery, np.inf).min(axis=1)
    non_d = np.where(own, np.inf, to_gallery).min(axis=1) if len(first) > 1 else np.full(len(probes), np.inf)
    non_d, mate_d, mate_hit, probe_p = _sorted_by(non_d, mate_d, mate_d < non_d, lab[probes])
    return Scored(
        pos_d=pos_d,
        pos_p=pos_p,
        tail_d=tail_d,
        tail_pa=tail_pa,
        tail_pb=tail_pb,
        samp_d=samp_d,
        samp_pa=samp_pa,
        samp_pb=samp_pb,
        mate_d=mate_d,
        mate_hit=mate_hit,
        non_d=non_d,
        probe_p=probe_p,
        images=np.bincount(lab, minlength=n_people).astype(np.float64),
        n_negative=len(nd),
    )


def _threshold_at(ds: Floats, ws: Floats, total: float, rate: float) -> float:
    """The largest threshold t whose weighted share of ``ds`` (sorted ascending, weights ``ws``, all weights
    ``total``) at ``d <= t`` is at most ``rate``: just below the first distance that would exceed it (every
    distance equal to it included)."""
    if total <= 0 or len(ds) == 0:
        return 2.0
    cum = np.cumsum(ws) / total
    over = np.flatnonzero(cum > rate + 1e-12)
    if len(over) == 0:  # never exceeded within ``ds`` (a tail): the last distance is safe
        return float(ds[-1])
    first_value = ds[over[0]]
    return float(np.nextafter(first_value, -np.inf))


def _best_balanced_accuracy(pos_d: Floats, wp: Floats, neg_d: Floats, wn: Floats) -> tuple[float, float]:
    """max over thresholds of (TAR + TNR) / 2, and the threshold (0 when accepting nothing is best)."""
    d = np.concatenate([pos_d, neg_d])
    order = np.argsort(d, kind="stable")
    w_pos = np.concatenate([wp / max(wp.sum(), 1e-300), np.zeros_like(wn)])[order]
    w_neg = np.concatenate([np.zeros_like(wp), wn / max(wn.sum(), 1e-300)])[order]
    ds = d[order]
    last = np.r_[ds[1:] != ds[:-1], True]
    acc = np.where(last, 0.5 * (np.cumsum(w_pos) + 1.0 - np.cumsum(w_neg)), -1.0)
    i = int(np.argmax(acc))
    return (float(acc[i]), float(ds[i])) if acc[i] > 0.5 else (0.5, 0.0)


def figures(s: Scored, person_weights: Floats | None = None) -> dict[str, float]:
    """The operating-point figures of ``s``; ``person_weights`` (n_people,) re-weights people (bootstrap)."""
    w = np.ones(s.n_people) if person_weights is None else np.asarray(person_weights, dtype=np.float64)
    wp = w[s.pos_p]
    accuracy, threshold = _best_balanced_accuracy(s.pos_d, wp, s.samp_d, w[s.samp_pa] * w[s.samp_pb])
    nw = s.images * w
    total_neg = 0.5 * (nw.sum() ** 2 - (nw**2).sum())
    t_far = _threshold_at(s.tail_d, w[s.tail_pa] * w[s.tail_pb], total_neg, FAR)
    tar = float((wp * (s.pos_d <= t_far)).sum() / max(wp.sum(), 1e-300))
    wq = w[s.probe_p]
    t_fpir = _threshold_at(s.non_d, wq, float(wq.sum()), FPIR)
    tpir = float((wq * (s.mate_hit & (s.mate_d <= t_fpir))).sum() / max(wq.sum(), 1e-300))
    return {
        "accuracy": accuracy,
        "tar_at_far_1e-3": tar,
        "tpir_at_fpir_1e-2": tpir,
        "score": 0.5 * (tar + tpir),
        "threshold": threshold,
        "threshold_at_far_1e-3": t_far,
        "threshold_at_fpir_1e-2": t_fpir,
    }


def _draws(n_people: int, n_boot: int, seed: int) -> npt.NDArray[np.float64]:
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n_people, size=(n_boot, n_people))
    return np.stack([np.bincount(row, minlength=n_people) for row in idx]).astype(np.float64)


def _interval(values: list[float]) -> list[float]:
    return [float(np.percentile(values, 2.5)), float(np.percentile(values, 97.5))]


def describe(s: Scored, *, n_boot: int = 200, seed: int = 0) -> dict[str, Any]:
    """``figures(s)`` plus ``ci95`` {metric: [low, high]} from ``n_boot`` bootstrap draws of people, and counts."""
    point = figures(s)
    boots = [figures(s, w) for w in _draws(s.n_people, n_boot, seed)]
    return {
        **point,
        "ci95": {m: _interval([b[m] for b in boots]) for m in METRICS},
        "people": s.n_people,
        "same_pairs": len(s.pos_d),
        "different_pairs": s.n_negative,
        "probes": len(s.probe_p),
    }


def compare(before: Scored, after: Scored, *, n_boot: int = 200, seed: int = 0) -> dict[str, Any]:
    """Before and after on the same images (``describe`` of each) and the paired-bootstrap difference
    ``delta`` {metric: after - before} with ``delta_ci95`` {metric: [low, high]}."""
    if before.n_people != after.n_people or len(before.probe_p) != len(after.probe_p):
        raise ValueError("before and after must be scored on the same images")
    pb, pa = figures(before), figures(after)
    db: dict[str, list[float]] = {m: [] for m in METRICS}
    bb: dict[str, list[float]] = {m: [] for m in METRICS}
    ab: dict[str, list[float]] = {m: [] for m in METRICS}
    for w in _draws(before.n_people, n_boot, seed):
        fb, fa = figures(before, w), figures(after, w)
        for m in METRICS:
            db[m].append(fa[m] - fb[m])
            bb[m].append(fb[m])
            ab[m].append(fa[m])
    counts = {
        "people": before.n_people,
        "same_pairs": len(before.pos_d),
        "different_pairs": before.n_negative,
        "probes": len(before.probe_p),
    }
    return {
        "before": {**pb, "ci95": {m: _interval(bb[m]) for m in METRICS}, **counts},
        "after": {**pa, "ci95": {m: _interval(ab[m]) for m in METRICS}, **counts},
        "delta": {m: pa[m] - pb[m] for m in METRICS},
        "delta_ci95": {m: _interval(db[m]) for m in METRICS},
        "bootstrap": {"draws": n_boot, "seed": seed, "unit": "person"},
    }
