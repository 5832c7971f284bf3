"""Tried and not kept: whitening the within-person scatter of the embeddings (WCCN) before identify's score.

On people the open-set figures never use (the protocol of bench/openset_tune.py: within the *fit* half of an LFW
person split, half the people form the cohort, the other half a development set with 30% strangers), a linear
map ``W = (S_w + shrink)^-1/2`` is learnt from the cohort people's within-person scatter ``S_w`` (people with two
or more photos; ``shrink`` pulls ``S_w`` towards ``alpha * trace(S_w)/d * I``), every embedding is mapped and
renormalised, and the symmetric cohort-normalised score (k = 10, :mod:`service.gallery.normalisation`) is
compared with and without it: TPIR at measured FPIR <= 1% and <= 0.1%, galleries of 100 people (20 random) and
of the whole development pool.

Usage: .venv/bin/python bench/openset_whiten.py --seeds 0,1 --alphas 0.1,0.3,0.6
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import numpy.typing as npt

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `bench` when run as a script

from bench.openset import TARGETS, draw_gallery, load, oracle_tpir, split_people, split_strangers
from bench.openset_tune import top_k_stats
from service.gallery.calibration import l2_matrix
from service.gallery.matching import template

Arr = npt.NDArray[np.float64]
COHORT_K = 10


def within_scatter(x: npt.NDArray[np.float32], names: npt.NDArray[np.str_], people: list[str]) -> tuple[Arr, int]:
    """The pooled within-person covariance (d, d) of ``people`` with two or more photos, and how many they are."""
    rows = [x[idx] - x[idx].mean(axis=0) for p in people if len(idx := np.flatnonzero(names == p)) >= 2]
    r = np.concatenate(rows).astype(np.float64)
    return r.T @ r / len(r), len(rows)


def whitening(scatter: Arr, alpha: float) -> Arr:
    """``(S + shrink)^-1/2`` of the scatter shrunk towards ``alpha * trace/d * I``."""
    d = len(scatter)
    s = (1 - alpha) * scatter + alpha * np.trace(scatter) / d * np.eye(d)
    vals, vecs = np.linalg.eigh(s)
    return np.asarray(vecs @ np.diag(vals**-0.5) @ vecs.T)


def unit(v: Arr) -> npt.NDArray[np.float32]:
    return np.asarray(v / np.linalg.norm(v, axis=1, keepdims=True), np.float32)


def run(x: npt.NDArray[np.float32], names: npt.NDArray[np.str_], seed: int, alphas: list[float]) -> None:
    fit, _ = split_people(names, seed)
    rng = np.random.default_rng(100 + seed)
    people = rng.permutation(sorted(fit))
    cohort_people, dev_people = list(people[: len(people) // 2]), sorted(people[len(people) // 2 :])
    scatter, classes = within_scatter(x, names, cohort_people)
    cohort_idx = [rng.permutation(np.flatnonzero(names == p))[: int(rng.integers(1, 4))] for p in cohort_people]
    members, pool, stranger_idx = split_strangers(names, dev_people, rng)
    galleries = {g: [draw_gallery(members, pool, g, rng) for _ in range(r)] for g, r in ((100, 20), (len(pool), 1))}
    print(f"seed {seed}: scatter of {classes} cohort people, {len(stranger_idx)} stranger probes")
    for alpha in [None, *alphas]:
        xt = x if alpha is None else unit(x @ whitening(scatter, alpha))
        cohort = np.stack([template(xt[i]) for i in cohort_idx])
        cells = []
        for drawn in galleries.values():
            got = np.zeros(len(TARGETS))
            for enrolled, mated_idx, owner in drawn:
                tm = np.stack([template(xt[e]) for e in enrolled])
                t_spread = top_k_stats(l2_matrix(tm, cohort), COHORT_K)[0]
                scores = []
                for idx in (mated_idx, stranger_idx):
                    p_spread = top_k_stats(l2_matrix(xt[idx], cohort), COHORT_K)[0]
                    scores.append(l2_matrix(xt[idx], tm) - 0.5 * (p_spread[:, None] + t_spread[None, :]))
                got += np.array([oracle_tpir(scores[0], scores[1], owner, t)[0] for t in TARGETS]) / len(drawn)
            cells.append(f"{got[0]:.3f} / {got[1]:.3f}")
        label = "no whitening" if alpha is None else f"whitened, alpha {alpha}"
        print(f"  {label:>22} | 100 people: {cells[0]} | {len(pool)} people: {cells[1]}  (FPIR <= 1% / <= 0.1%)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--embeddings", type=Path, default=Path("reports/lfw_embeddings.npz"))
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--alphas", default="0.1,0.3,0.6")
    args = parser.parse_args()
    x, names, _ = load(args.embeddings, None)
    for seed in (int(s) for s in args.seeds.split(",")):
        run(x, names, seed, [float(a) for a in args.alphas.split(",")])


if __name__ == "__main__":
    main()
