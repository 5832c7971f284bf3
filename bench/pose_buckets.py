"""Accuracy by head pose on LFW View 2: pairs bucketed by the larger |yaw| of their two faces.

Yaw comes from each image's cached MTCNN landmarks (:func:`embeddings.pose.estimate_pose`). Per bucket: the
number of pairs, the accuracy at the model card's threshold, the genuine-pair acceptance (TAR) at that threshold
and at the threshold where all 3,000 impostor pairs give FAR <= 1e-3, and the impostor acceptance (FAR).
Also the share of all LFW images per yaw bucket, how many exceed the enrolment limit, and the overall View 2
10-fold accuracy and TAR@FAR 1e-3 of these embeddings (those of ``facerec eval lfw``'s default settings). Usage:

    .venv/bin/python bench/pose_buckets.py --lfw ../shared/data/lfw \
        --embeddings reports/lfw_embeddings.npz --detections reports/lfw-view2/detections.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from embeddings.dataset import read_detection_cache
from embeddings.evaluation import read_pairs, roc, summarize, tar_at_far
from embeddings.model_card import default_threshold
from embeddings.pose import estimate_pose
from embeddings.quality import DEFAULT_MAX_YAW

BUCKETS = [(0.0, 15.0), (15.0, 30.0), (30.0, 45.0), (45.0, 180.0)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lfw", type=Path, default=Path("../shared/data/lfw"))
    parser.add_argument("--embeddings", type=Path, default=Path("reports/lfw_embeddings.npz"))
    parser.add_argument("--detections", type=Path, default=Path("reports/lfw-view2/detections.json"))
    parser.add_argument("--out", type=Path, default=Path("reports/pose_buckets.json"))
    args = parser.parse_args()

    d = np.load(args.embeddings, allow_pickle=False)
    emb = {str(p): e for p, e in zip(d["paths"], np.asarray(d["embeddings"], np.float32), strict=True)}
    cached, _ = read_detection_cache(args.detections)
    yaw: dict[str, float] = {}
    for path, dt in cached.items():
        if dt is not None:
            pose = estimate_pose(dt.landmarks, dt.box)
            if pose is not None:
                yaw[path] = abs(pose.yaw)
    all_yaw = np.array(list(yaw.values()))
    all_pairs = read_pairs(args.lfw / "pairs.txt")
    pairs = [p for p in all_pairs if p.a in emb and p.b in emb]
    dist = np.array([float(np.linalg.norm(emb[p.a] - emb[p.b])) for p in pairs])
    same = np.array([p.same for p in pairs])
    pair_yaw = np.array([max(yaw.get(p.a, 0.0), yaw.get(p.b, 0.0)) for p in pairs])
    threshold = default_threshold()
    _, t_far = tar_at_far(roc(dist, same), 1e-3)
    out: dict[str, object] = {"pairs": len(pairs), "threshold": threshold, "threshold_far_1e-3": t_far, "buckets": []}
    overall = summarize(dist, same, [p.fold for p in pairs])
    out["view2"] = {k: overall[k] for k in ("pairs", "accuracy_mean", "accuracy_std", "tar_at_far_1e-3")}
    print(f"{len(pairs)} of {len(all_pairs)} View 2 pairs with both faces; card threshold {threshold:.3f}")
    print(
        f"View 2 10-fold accuracy {overall['accuracy_mean']:.4f} +- {overall['accuracy_std']:.4f}, "
        f"TAR@FAR1e-3 {overall['tar_at_far_1e-3']:.4f} (threshold {t_far:.3f})"
    )
    print(f"LFW images with |yaw| > {DEFAULT_MAX_YAW:g}: {int((all_yaw > DEFAULT_MAX_YAW).sum())} of {len(all_yaw)}")
    print(f"{'max |yaw|':>10} {'images':>7} {'pairs':>6} {'same':>5} {'acc':>7} {'TAR':>7} {'FAR':>8} {'TAR@1e-3':>9}")
    rows = []
    for lo, hi in BUCKETS:
        sel = (pair_yaw >= lo) & (pair_yaw < hi)
        s, dd = same[sel], dist[sel]
        row = {
            "yaw": f"{lo:g}-{hi:g}",
            "images": int(((all_yaw >= lo) & (all_yaw < hi)).sum()),
            "pairs": int(sel.sum()),
            "genuine": int(s.sum()),
            "accuracy": float(np.mean((dd <= threshold) == s)) if sel.any() else None,
            "tar": float(np.mean(dd[s] <= threshold)) if s.any() else None,
            "far": float(np.mean(dd[~s] <= threshold)) if (~s).any() else None,
            "tar_at_global_far_1e-3": float(np.mean(dd[s] <= t_far)) if s.any() else None,
        }
        rows.append(row)

        def f(v: object) -> str:
            return f"{v:.4f}" if isinstance(v, float) else "-"

        print(
            f"{row['yaw']:>10} {row['images']:>7} {row['pairs']:>6} {row['genuine']:>5} {f(row['accuracy']):>7} "
            f"{f(row['tar']):>7} {f(row['far']):>8} {f(row['tar_at_global_far_1e-3']):>9}"
        )
    out["buckets"] = rows
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
