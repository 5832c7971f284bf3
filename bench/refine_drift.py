"""Does the detector's full-resolution refinement move embeddings away from what LFW validated?

LFW images are 250x250, so LFW View 2 never exercises the refinement (it runs only on images downscaled for
detection). Here each sampled LFW image is scaled x3 (750x750, cubic) and pasted at a random place on a grey
1920x1080 canvas; its first face is embedded with the refinement on and off, and each embedding's L2 distance
(0 = identical, unit vectors) to the embedding of the original 250x250 image is reported. Lower is closer to
the pipeline that LFW View 2 measured.

    nice -n 19 python bench/refine_drift.py --count 400 --out reports/refine_drift.json
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `bench` when run as a script

from bench.paths import LFW, write_report

NO_FACE = 2.0
"""Distance counted for a canvas where no face is found (the largest possible between unit vectors)."""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lfw", type=Path, default=LFW / "lfw-deepfunneled")
    ap.add_argument("--count", type=int, default=400, help="LFW images sampled (seed 7)")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()

    from embeddings.analyzer import FaceAnalyzer

    paths = sorted(args.lfw.rglob("*.jpg"))
    random.Random(7).shuffle(paths)
    rng = np.random.default_rng(7)
    analyzer = FaceAnalyzer()
    rows: list[tuple[float, float]] = []
    for path in paths[: args.count]:
        raw = path.read_bytes()
        original = analyzer.analyze(raw)
        if not original:
            continue
        big = cv2.resize(analyzer.load_image(raw), (750, 750), interpolation=cv2.INTER_CUBIC)
        canvas = np.full((1080, 1920, 3), 128, np.uint8)
        x, y = int(rng.integers(0, 1920 - 750)), int(rng.integers(0, 1080 - 750))
        canvas[y : y + 750, x : x + 750] = big
        dists = []
        for refine in (True, False):
            analyzer.detector.refine = refine
            faces = analyzer.analyze(canvas)
            dists.append(float(np.linalg.norm(faces[0].embedding - original[0].embedding)) if faces else NO_FACE)
        analyzer.detector.refine = True
        rows.append((dists[0], dists[1]))
    r = np.array(rows)
    result = {
        "images": len(r),
        "refined_mean": round(float(r[:, 0].mean()), 4),
        "unrefined_mean": round(float(r[:, 1].mean()), 4),
        "refined_p95": round(float(np.percentile(r[:, 0], 95)), 4),
        "unrefined_p95": round(float(np.percentile(r[:, 1], 95)), 4),
        "refined_closer_share": round(float((r[:, 0] < r[:, 1]).mean()), 3),
        "no_face": {"refined": int((r[:, 0] == NO_FACE).sum()), "unrefined": int((r[:, 1] == NO_FACE).sum())},
    }
    print(json.dumps(result, indent=1))
    write_report(args.out, result)


if __name__ == "__main__":
    main()
