"""Open-set identification: how often a stranger is wrongly matched, by threshold and gallery size.

A probe of someone *not* enrolled is falsely identified when its best distance over the gallery is at or
below the threshold ``t``. With ``FAR(t)`` the fraction of impostor pairs (two different people) whose L2
distance is ``<= t``, and treating the gallery's ``N`` faces as independent chances::

    FIR(t, N) = 1 - (1 - FAR(t)) ** N

so a threshold that accepts one impostor pair in a thousand accepts ~10% of strangers at N = 100 and ~63% at
N = 1000. Faces of one person are correlated, so ``N`` = number of faces over-estimates FIR (conservative) and
N = number of subjects is closer; docs/GALLERY.md compares both with FIR measured on LFW.

``FAR(t)`` comes from ``impostor_far.json`` in this package: every impostor pair of the LFW embeddings of the
production pipeline (model id in the file), histogrammed on a fine threshold grid.

Measured on LFW, the independence model over-predicts at large N (impostor scores are correlated per probe:
some strangers resemble many people, most resemble nobody). The default model is therefore the *per-probe
mixture*: ``FIR(t, N) = mean over probes p of 1 - (1 - FAR_p(t)) ** N``, with ``FAR_p`` each probe's own
impostor FAR (``impostor_far_probes.npz``: 2 000 LFW probes against every other person's images), shrunk
towards the pooled FAR with :data:`PRIOR_PAIRS` pseudo-pairs so that the finite sample (~13 000 impostors per
probe) does not read as FAR 0. ``model="independent"`` gives the closed form above.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

FAR_TABLE = Path(__file__).with_name("impostor_far.json")
PROBE_TABLE = Path(__file__).with_name("impostor_far_probes.npz")
PRIOR_PAIRS = 1000.0
"""Weight, in impostor pairs, of the pooled FAR in each probe's shrunk FAR estimate."""
MIXTURE = "mixture"
INDEPENDENT = "independent"


@dataclass(frozen=True)
class FarTable:
    """``far[i]`` = fraction of impostor pairs with L2 distance ``<= thresholds[i]`` (both ascending)."""

    model_id: str
    thresholds: npt.NDArray[np.float64]
    far: npt.NDArray[np.float64]
    pairs: int
    source: str

    @classmethod
    def from_counts(
        cls,
        thresholds: npt.NDArray[np.float64],
        counts_at_or_below: npt.NDArray[np.int64],
        pairs: int,
        *,
        model_id: str,
        source: str,
    ) -> FarTable:
        """From cumulative counts of impostor pairs at or below each threshold."""
        return cls(
            model_id,
            np.asarray(thresholds, np.float64),
            np.asarray(counts_at_or_below) / pairs,
            pairs,
            source,
        )

    def far_at(self, threshold: float) -> float:
        """FAR at ``threshold`` (linear interpolation; 0 below the grid, 1 above)."""
        return float(np.interp(threshold, self.thresholds, self.far, left=0.0, right=1.0))

    def threshold_at_far(self, far: float) -> float:
        """The largest threshold whose FAR (as :meth:`far_at` interpolates it) is ``<= far``."""
        f, t = self.far, self.thresholds
        i = int(np.searchsorted(f, far, side="right")) - 1  # last grid point with FAR <= far
        if i < 0:
            return float(t[0])
        if i >= len(f) - 1:
            return float(t[-1])
        frac = (far - f[i]) / (f[i + 1] - f[i])  # f[i] <= far < f[i + 1]
        return float(t[i] + frac * (t[i + 1] - t[i]))

    def to_json(self) -> dict[str, Any]:
        return {
            "model_id": self.model_id,
            "metric": "L2 between unit embeddings; far = fraction of impostor pairs with distance <= t",
            "source": self.source,
            "pairs": self.pairs,
            "thresholds": [round(float(x), 4) for x in self.thresholds],
            "far": [float(f"{x:.6g}") for x in self.far],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FarTable:
        t = np.asarray(data["thresholds"], np.float64)
        f = np.asarray(data["far"], np.float64)
        if t.shape != f.shape or not (np.diff(t) > 0).all() or (np.diff(f) < 0).any():
            raise ValueError("FAR table: thresholds must increase and FAR must not decrease")
        return cls(str(data["model_id"]), t, f, int(data["pairs"]), str(data["source"]))


@dataclass(frozen=True)
class ProbeFarTable:
    """Per-probe impostor counts: ``counts[i, j]`` impostors of probe ``i`` at L2 ``<= thresholds[j]``, out of
    ``n[i]`` impostors compared."""

    thresholds: npt.NDArray[np.float64]
    counts: npt.NDArray[np.int64]
    n: npt.NDArray[np.int64]

    def far_per_probe(self, threshold: float, pooled_far: float) -> npt.NDArray[np.float64]:
        """Each probe's FAR at ``threshold`` (interpolated), shrunk towards ``pooled_far``."""
        t = self.thresholds
        if threshold <= t[0]:
            c = self.counts[:, 0] * 0.0
        elif threshold >= t[-1]:
            c = self.counts[:, -1].astype(np.float64)
        else:
            j = int(np.searchsorted(t, threshold, side="right")) - 1
            frac = (threshold - t[j]) / (t[j + 1] - t[j])
            c = self.counts[:, j] * (1 - frac) + self.counts[:, j + 1] * frac
        return np.asarray((c + PRIOR_PAIRS * pooled_far) / (self.n + PRIOR_PAIRS), np.float64)

    def save(self, path: Path) -> None:
        np.savez_compressed(path, thresholds=self.thresholds, counts=self.counts.astype(np.uint16), n=self.n)

    @classmethod
    def load(cls, path: Path) -> ProbeFarTable:
        with np.load(path) as d:
            return cls(d["thresholds"].astype(np.float64), d["counts"].astype(np.int64), d["n"].astype(np.int64))


@lru_cache(maxsize=4)
def load_probe_table(path: Path = PROBE_TABLE) -> ProbeFarTable | None:
    """The shipped per-probe table, or None if absent (then only the independence model is available)."""
    return ProbeFarTable.load(path) if Path(path).exists() else None


@lru_cache(maxsize=4)
def load_far_table(path: Path = FAR_TABLE) -> FarTable:
    """The impostor FAR table shipped with the package (or another file in the same format)."""
    return FarTable.from_json(json.loads(Path(path).read_text()))


def fir_from_far(far: float, gallery_size: int) -> float:
    """``1 - (1 - far) ** gallery_size``, computed stably."""
    if gallery_size <= 0 or far <= 0.0:
        return 0.0
    if far >= 1.0:
        return 1.0
    return float(-math.expm1(gallery_size * math.log1p(-far)))


def false_identification_rate(
    threshold: float,
    gallery_size: int,
    *,
    table: FarTable | None = None,
    probes: ProbeFarTable | None = None,
    model: str = MIXTURE,
) -> float:
    """Predicted probability that a stranger's best match in a gallery of ``gallery_size`` faces is at L2
    distance ``<= threshold`` (so a non-enrolled person would be reported as someone).

    ``model``: ``"mixture"`` (per-probe FAR, the default; falls back to independent when no per-probe table
    is given or shipped) or ``"independent"``."""
    tab = table or load_far_table()
    far = tab.far_at(threshold)
    per_probe = probes if probes is not None else (load_probe_table() if table is None else None)
    if model == INDEPENDENT or per_probe is None:
        return fir_from_far(far, gallery_size)
    if model != MIXTURE:
        raise ValueError(f"unknown model {model!r}")
    if gallery_size <= 0:
        return 0.0
    fp = np.clip(per_probe.far_per_probe(threshold, far), 0.0, 1.0 - 1e-12)
    return float(np.mean(-np.expm1(gallery_size * np.log1p(-fp))))


def threshold_for_fir(
    target_fir: float,
    gallery_size: int,
    *,
    table: FarTable | None = None,
    probes: ProbeFarTable | None = None,
    model: str = MIXTURE,
) -> float:
    """The largest L2 threshold whose predicted false-identification rate at ``gallery_size`` is
    ``<= target_fir`` (an adaptive threshold that tightens as the gallery grows)."""
    if not 0.0 < target_fir < 1.0:
        raise ValueError("target_fir must be in (0, 1)")
    n = max(int(gallery_size), 1)
    tab = table or load_far_table()
    per_probe = probes if probes is not None else (load_probe_table() if table is None else None)
    if model == INDEPENDENT or per_probe is None:
        return tab.threshold_at_far(-math.expm1(math.log1p(-target_fir) / n))
    lo, hi = 0.0, 2.0  # FIR is non-decreasing in the threshold: bisect
    for _ in range(40):
        mid = (lo + hi) / 2
        if false_identification_rate(mid, n, table=tab, probes=per_probe, model=model) <= target_fir:
            lo = mid
        else:
            hi = mid
    return lo


def open_set_report(threshold: float, gallery_size: int, *, table: FarTable | None = None) -> dict[str, Any]:
    """What the service puts next to an identification: the threshold, the gallery size it was judged
    against and the false-identification rate that gives (per-probe mixture model with the shipped tables)."""
    tab = table or load_far_table()
    return {
        "threshold": threshold,
        "gallery_size": gallery_size,
        "false_identification_rate": false_identification_rate(
            threshold, gallery_size, table=tab, probes=load_probe_table() if table is None else None
        ),
        "far_per_comparison": tab.far_at(threshold),
        "model_id": tab.model_id,
    }


def impostor_far_table(
    embeddings: npt.NDArray[np.float32],
    labels: npt.NDArray[Any],
    *,
    model_id: str,
    source: str,
    step: float = 0.005,
    chunk: int = 2048,
) -> FarTable:
    """Histogram every impostor pair (different labels) of ``embeddings`` on a threshold grid in [0, 2]."""
    x = np.asarray(embeddings, np.float32)
    lab = np.unique(np.asarray(labels), return_inverse=True)[1]
    edges = np.arange(0.0, 2.0 + step / 2, step)
    hist = np.zeros(len(edges) + 1, np.int64)
    pairs = 0
    for a in range(0, len(x), chunk):
        xa, la = x[a : a + chunk], lab[a : a + chunk]
        sim = xa @ x[a:].T
        d = np.sqrt(np.clip(2.0 - 2.0 * sim, 0.0, 4.0))
        mask = la[:, None] != lab[a:][None, :]
        upper = np.arange(a, a + len(xa))[:, None] < np.arange(a, len(x))[None, :]
        vals = d[mask & upper]
        pairs += len(vals)
        hist += np.bincount(np.searchsorted(edges, vals, side="left"), minlength=len(edges) + 1)
    counts = np.cumsum(hist)[: len(edges)]
    return FarTable.from_counts(edges, counts, pairs, model_id=model_id, source=source)


def impostor_probe_table(
    embeddings: npt.NDArray[np.float32],
    labels: npt.NDArray[Any],
    *,
    probes: int = 2000,
    seed: int = 0,
    thresholds: npt.NDArray[np.float64] | None = None,
) -> ProbeFarTable:
    """For ``probes`` random images: how many images of *other* people lie within each threshold."""
    x = np.asarray(embeddings, np.float32)
    lab = np.unique(np.asarray(labels), return_inverse=True)[1]
    grid = np.round(np.arange(0.40, 1.6001, 0.01), 4) if thresholds is None else np.asarray(thresholds)
    pick = np.random.default_rng(seed).choice(len(x), min(probes, len(x)), replace=False)
    counts = np.zeros((len(pick), len(grid)), np.int64)
    n = np.zeros(len(pick), np.int64)
    for a in range(0, len(pick), 256):
        rows = pick[a : a + 256]
        d = np.sqrt(np.clip(2.0 - 2.0 * (x[rows] @ x.T), 0.0, 4.0))
        other = lab[rows][:, None] != lab[None, :]
        n[a : a + len(rows)] = other.sum(axis=1)
        d = np.where(other, d, np.inf)
        d.sort(axis=1)
        counts[a : a + len(rows)] = np.stack([np.searchsorted(r, grid, side="right") for r in d])
    return ProbeFarTable(grid.astype(np.float64), counts, n)
