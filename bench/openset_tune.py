"""Choose identify's score normalisation on people the open-set figures never use.

Within the *fit* half of an LFW person split (:func:`bench.openset.split_people`; the eval half, which
bench/openset.py measures, is not touched), half of the people form the cohort (one template of 1-3 random
photos each) and the other half a development set with the open-set protocol of bench/openset.py (30%
strangers; galleries of 100 people, 20 random ones, and of all the pool). Each variant's TPIR at measured FPIR
<= 1% and <= 0.1% is printed. Variants (``d`` the L2 distance to the subject's template, ``m(x)`` the mean
distance of ``x`` to its ``k`` nearest cohort templates, ``s(x)`` their standard deviation):

* ``raw``: ``d``;  ``probe``: ``d - m(p)``;  ``subject``: ``d - m(t)``;  ``symmetric``: ``d - (m(p) + m(t)) / 2``;
* ``s-norm``: ``((d - m(p)) / s(p) + (d - m(t)) / s(t)) / 2`` (adaptive s-norm on the top-k cohort);
* ``symmetric+margin b``: the symmetric score with each probe's best subject moved by the margin to its
  second best, ``s1 - b * (s2 - s1)`` (a ratio test; ``--margins``).

Usage: .venv/bin/python bench/openset_tune.py --seeds 0,1 [--ks 5,10,25,50] [--margins 0.1,0.25,0.5]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import numpy.typing as npt

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `bench` when run as a script

from bench.openset import TARGETS, draw_gallery, load, oracle_tpir, split_people, split_strangers
from service.gallery.calibration import l2_matrix
from service.gallery.matching import template

Arr = npt.NDArray[np.float64]


def top_k_stats(d: Arr, k: int) -> tuple[Arr, Arr]:
    """Mean and standard deviation of each row's ``k`` smallest values."""
    part = np.partition(d, k - 1, axis=1)[:, :k]
    return part.mean(axis=1), part.std(axis=1) + 1e-6


VARIANTS: dict[str, Callable[[Arr, tuple[Arr, Arr], tuple[Arr, Arr]], Arr]] = {
    "probe": lambda d, p, t: d - p[0][:, None],
    "subject": lambda d, p, t: d - t[0][None, :],
    "symmetric": lambda d, p, t: d - 0.5 * (p[0][:, None] + t[0][None, :]),
    "s-norm": lambda d, p, t: 0.5 * ((d - p[0][:, None]) / p[1][:, None] + (d - t[0][None, :]) / t[1][None, :]),
}


def with_margin(scores: Arr, b: float) -> Arr:
    """``scores`` with each row's best (lowest) entry ``s1`` replaced by ``s1 - b * (s2 - s1)``, ``s2`` the row's
    second best: the same best subject, its score moved by how far ahead of the next one it is."""
    out = scores.copy()
    rows = np.arange(len(scores))
    order = np.argsort(scores, axis=1)[:, :2]
    s1, s2 = scores[rows, order[:, 0]], scores[rows, order[:, 1]]
    out[rows, order[:, 0]] = s1 - b * (s2 - s1)
    return out


def tune(
    x: npt.NDArray[np.float32], names: npt.NDArray[np.str_], seed: int, ks: list[int], margins: list[float]
) -> dict[str, list[float]]:
    fit, _ = split_people(names, seed)
    rng = np.random.default_rng(100 + seed)
    people = rng.permutation(sorted(fit))
    cohort_people, dev_people = people[: len(people) // 2], sorted(people[len(people) // 2 :])
    cohort = np.stack(
        [template(x[rng.permutation(np.flatnonzero(names == p))[: int(rng.integers(1, 4))]]) for p in cohort_people]
    )
    members, pool, stranger_idx = split_strangers(names, dev_people, rng)
    results: dict[str, list[float]] = {}
    for g, repeats in ((100, 20), (len(pool), 1)):
        sums: dict[str, Arr] = {}
        for _ in range(repeats):
            enrolled, mated_idx, owner = draw_gallery(members, pool, g, rng)
            tm = np.stack([template(x[e]) for e in enrolled])
            t_stats = {k: top_k_stats(l2_matrix(tm, cohort), k) for k in ks}
            scored = {}
            for key, idx in (("m", mated_idx), ("s", stranger_idx)):
                d, dc = l2_matrix(x[idx], tm), l2_matrix(x[idx], cohort)
                scored[key, "raw"] = d
                for k in ks:
                    p_stats = top_k_stats(dc, k)
                    for name, f in VARIANTS.items():
                        scored[key, f"{name} k={k}"] = f(d, p_stats, t_stats[k])
                    for b in margins:
                        scored[key, f"symmetric+margin {b} k={k}"] = with_margin(scored[key, f"symmetric k={k}"], b)
            for name in dict.fromkeys(v for _, v in scored):
                got = [oracle_tpir(scored["m", name], scored["s", name], owner, t)[0] for t in TARGETS]
                sums[name] = sums.get(name, np.zeros(len(TARGETS))) + np.array(got) / repeats
        for name, value in sums.items():
            results.setdefault(name, []).extend(value.tolist())
        print(f"seed {seed}: gallery {g} people x {repeats}, {len(stranger_idx)} stranger probes, cohort {len(cohort)}")
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--embeddings", type=Path, default=Path("reports/lfw_embeddings.npz"))
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--ks", default="5,10,25,50")
    parser.add_argument("--margins", default="", help="comma-separated b of the symmetric+margin variant")
    args = parser.parse_args()
    x, names, _ = load(args.embeddings, None)
    ks = [int(k) for k in args.ks.split(",")]
    for seed in (int(s) for s in args.seeds.split(",")):
        res = tune(x, names, seed, ks, [float(b) for b in args.margins.split(",") if b])
        print(f"{'variant':>30} | 100 people: TPIR@FPIR<=1%  <=0.1% | all: TPIR@FPIR<=1%  <=0.1%")
        for name, (a, b, c, d) in res.items():
            print(f"{name:>30} | {a:22.3f} {b:7.3f} | {c:17.3f} {d:7.3f}")


if __name__ == "__main__":
    main()
