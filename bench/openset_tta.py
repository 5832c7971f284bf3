"""Alignment test-time augmentation for open-set identification: does averaging embeddings of several crops of
the same face (margins, with and without the eye-line rotation) name more people at FPIR <= 1%?

Each variant's embeddings come from bench/lfw_embeddings.py (``--margin``, ``--rotate``; the detections it
caches are shared). ``--combos`` lists groups of those ``.npz`` files (``+``-joined, groups comma-separated);
each group's unit embeddings are averaged and renormalised, and bench/openset_tune.py's protocol runs on the
*fit* half of the split only (cohort and development people; the eval half is not touched): TPIR at measured
FPIR <= 1% and <= 0.1%, raw template distance and the shipped symmetric cohort normalisation (k = 10).

    for v in "0.1 on" "0.2 on" "0.15 off"; do set -- $v
      .venv/bin/python bench/lfw_embeddings.py --root ../shared/data/lfw/lfw-deepfunneled \\
          --detections reports/lfw-view2/detections.json --margin $1 --rotate $2 --out reports/tta/m$1-$2.npz
    done
    .venv/bin/python bench/openset_tta.py --combos reports/lfw_embeddings.npz,\\
reports/tta/m0.1-on.npz+reports/lfw_embeddings.npz
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import numpy.typing as npt

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `bench` when run as a script

from bench.openset import load
from bench.openset_tune import tune

K = 10
"""The cohort size of the shipped normalisation."""


def combine(files: list[Path]) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.str_]]:
    """The renormalised mean of the unit embeddings of ``files`` (the same images in the same order), and the
    names."""
    loaded = [load(f, None) for f in files]
    if any(paths != loaded[0][2] for _, _, paths in loaded):
        raise SystemExit(f"{' + '.join(map(str, files))}: the files embed different images")
    mean = np.mean([x for x, _, _ in loaded], axis=0)
    return (mean / np.linalg.norm(mean, axis=1, keepdims=True)).astype(np.float32), loaded[0][1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--combos", required=True, help="comma-separated groups of +-joined .npz files")
    parser.add_argument("--seeds", default="0,1")
    args = parser.parse_args()
    lines = []
    for combo in args.combos.split(","):
        x, names = combine([Path(f) for f in combo.split("+")])
        label = " + ".join(Path(f).stem for f in combo.split("+"))
        for seed in (int(s) for s in args.seeds.split(",")):
            r = tune(x, names, seed, [K], [])
            raw, norm = r["raw"], r[f"symmetric k={K}"]
            lines.append(
                f"{label:>48} {seed:>4} | {raw[0]:.3f} / {raw[1]:.3f}, {norm[0]:.3f} / {norm[1]:.3f}"
                f" | {raw[2]:.3f} / {raw[3]:.3f}, {norm[2]:.3f} / {norm[3]:.3f}"
            )
    print(f"{'embeddings averaged':>48} {'seed':>4} | 100 people raw 1% / 0.1%, normalised 1% / 0.1% | all: the same")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
