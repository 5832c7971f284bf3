"""Verification protocols and metrics: LFW pairs files, 10-fold accuracy, ROC, TAR@FAR, EER, threshold choice.

All scores are L2 distances between unit embeddings in [0, 2]; a pair is predicted "same" when
``distance <= threshold``. FAR = share of different-person pairs accepted; TAR = share of same-person pairs
accepted.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class Pair:
    """One protocol pair: two image paths (relative to the dataset root), same person or not, and its fold."""

    a: str
    b: str
    same: bool
    fold: int


def _lfw_path(name: str, number: str) -> str:
    return f"{name}/{name}_{int(number):04d}.jpg"


def read_pairs(path: str | Path) -> list[Pair]:
    """Parse an LFW pairs file: ``pairs.txt`` (View 2, header ``10 300``: folds x pairs per class) or
    ``pairsDevTrain.txt`` / ``pairsDevTest.txt`` (View 1, header ``N``: one fold of N same then N different)."""
    lines = [ln.split() for ln in Path(path).read_text().splitlines() if ln.strip()]
    header, rows = lines[0], lines[1:]
    folds, per_class = (int(header[0]), int(header[1])) if len(header) == 2 else (1, int(header[0]))
    if len(rows) != folds * per_class * 2:
        raise ValueError(f"{path}: expected {folds * per_class * 2} pairs, found {len(rows)}")
    pairs: list[Pair] = []
    for i, row in enumerate(rows):
        fold = i // (2 * per_class)
        if len(row) == 3:
            pairs.append(Pair(_lfw_path(row[0], row[1]), _lfw_path(row[0], row[2]), True, fold))
        elif len(row) == 4:
            pairs.append(Pair(_lfw_path(row[0], row[1]), _lfw_path(row[2], row[3]), False, fold))
        else:
            raise ValueError(f"{path}: line {i + 2} has {len(row)} fields")
    return pairs


def accuracy_at(distances: FloatArray, same: npt.NDArray[np.bool_], threshold: float) -> float:
    """Share of pairs classified correctly with ``distance <= threshold`` meaning same."""
    return float(np.mean((distances <= threshold) == same))


def best_threshold(distances: FloatArray, same: npt.NDArray[np.bool_]) -> float:
    """The threshold that maximises accuracy on these pairs (midpoint between neighbouring sorted distances;
    the middle of the best plateau when several tie)."""
    order = np.sort(np.unique(distances))
    candidates = np.concatenate([[order[0] - 1e-6], (order[:-1] + order[1:]) / 2.0, [order[-1] + 1e-6]])
    # Accuracy for every candidate in one pass: accepted same pairs + rejected different pairs.
    s_sorted = np.sort(distances[same])
    d_sorted = np.sort(distances[~same])
    tp = np.searchsorted(s_sorted, candidates, side="right")
    fp = np.searchsorted(d_sorted, candidates, side="right")
    acc = (tp + (len(d_sorted) - fp)) / len(distances)
    best = np.flatnonzero(acc == acc.max())
    return float(candidates[best[len(best) // 2]])


@dataclass(frozen=True, slots=True)
class FoldResult:
    accuracies: list[float]
    thresholds: list[float]

    @property
    def mean(self) -> float:
        return float(np.mean(self.accuracies))

    @property
    def std(self) -> float:
        return float(np.std(self.accuracies))


def kfold_accuracy(distances: FloatArray, same: npt.NDArray[np.bool_], folds: npt.NDArray[np.int_]) -> FoldResult:
    """Standard LFW protocol: for each fold, pick the threshold on the other folds, score the held-out one.

    With a single fold (View 1), the threshold is chosen and scored on the same pairs (optimistic).
    """
    fold_ids = np.unique(folds)
    accs: list[float] = []
    ths: list[float] = []
    for f in fold_ids:
        test = folds == f
        train = ~test if len(fold_ids) > 1 else test
        t = best_threshold(distances[train], same[train])
        ths.append(t)
        accs.append(accuracy_at(distances[test], same[test], t))
    return FoldResult(accs, ths)


@dataclass(frozen=True, slots=True)
class Roc:
    """ROC over thresholds (ascending distance): ``far`` and ``tar`` at each threshold."""

    thresholds: FloatArray
    far: FloatArray
    tar: FloatArray


def roc(distances: FloatArray, same: npt.NDArray[np.bool_]) -> Roc:
    thresholds = np.concatenate([[0.0], np.sort(np.unique(distances)), [4.0]])
    tar = np.searchsorted(np.sort(distances[same]), thresholds, side="right") / max(same.sum(), 1)
    far = np.searchsorted(np.sort(distances[~same]), thresholds, side="right") / max((~same).sum(), 1)
    return Roc(thresholds, far.astype(np.float64), tar.astype(np.float64))


def tar_at_far(curve: Roc, target_far: float) -> tuple[float, float]:
    """Highest TAR whose FAR is <= ``target_far``; returns ``(tar, threshold)``."""
    ok = np.flatnonzero(curve.far <= target_far)
    i = ok[-1] if len(ok) else 0
    return float(curve.tar[i]), float(curve.thresholds[i])


def eer(curve: Roc) -> tuple[float, float]:
    """Equal error rate (where FAR = 1 - TAR) and its threshold."""
    frr = 1.0 - curve.tar
    i = int(np.argmin(np.abs(curve.far - frr)))
    return float((curve.far[i] + frr[i]) / 2.0), float(curve.thresholds[i])


def summarize(
    distances: Sequence[float] | FloatArray,
    same: Sequence[bool] | npt.NDArray[np.bool_],
    folds: Sequence[int] | npt.NDArray[np.int_],
) -> dict[str, Any]:
    """All the verification figures as a JSON-ready dict (accuracy in [0, 1], thresholds as L2 distances)."""
    d = np.asarray(distances, dtype=np.float64)
    s = np.asarray(same, dtype=bool)
    f = np.asarray(folds, dtype=np.int64)
    kf = kfold_accuracy(d, s, f)
    curve = roc(d, s)
    tar3, th3 = tar_at_far(curve, 1e-3)
    tar2, th2 = tar_at_far(curve, 1e-2)
    e, eth = eer(curve)
    threshold = best_threshold(d, s)
    return {
        "pairs": len(d),
        "folds": len(np.unique(f)),
        "accuracy_mean": kf.mean,
        "accuracy_std": kf.std,
        "fold_accuracies": kf.accuracies,
        "fold_thresholds": kf.thresholds,
        "tar_at_far_1e-3": tar3,
        "threshold_at_far_1e-3": th3,
        "tar_at_far_1e-2": tar2,
        "threshold_at_far_1e-2": th2,
        "eer": e,
        "eer_threshold": eth,
        "threshold": threshold,
        "far_at_threshold": float(np.mean(d[~s] <= threshold)),
        "tar_at_threshold": float(np.mean(d[s] <= threshold)),
    }


def plot_roc(distances: FloatArray, same: npt.NDArray[np.bool_], path: Path, title: str) -> None:
    """Write a ROC curve PNG (log-scale FAR)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curve = roc(np.asarray(distances, np.float64), np.asarray(same, bool))
    fig, ax = plt.subplots(figsize=(6, 4.5), dpi=110)
    far = np.clip(curve.far, 1e-5, 1.0)
    ax.plot(far, curve.tar, lw=1.8)
    ax.set_xscale("log")
    ax.set_xlim(1e-4, 1.0)
    ax.set_ylim(0.8, 1.001)
    ax.set_xlabel("false accept rate (different-person pairs accepted)")
    ax.set_ylabel("true accept rate")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_histogram(
    distances: FloatArray, same: npt.NDArray[np.bool_], threshold: float, path: Path, title: str
) -> None:
    """Write a histogram PNG of same-person and different-person distances with the threshold marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    d = np.asarray(distances, np.float64)
    s = np.asarray(same, bool)
    fig, ax = plt.subplots(figsize=(6, 4.5), dpi=110)
    bins = [i / 40.0 for i in range(81)]
    ax.hist(d[s], bins=bins, alpha=0.6, label="same person")
    ax.hist(d[~s], bins=bins, alpha=0.6, label="different people")
    ax.axvline(threshold, color="k", ls="--", lw=1.2, label=f"threshold {threshold:.3f}")
    ax.set_xlabel("L2 distance between unit embeddings")
    ax.set_ylabel("pairs")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
