"""Alignment test-time augmentation for open-set identification: does averaging embeddings of several crops of
the same face (margins, with and without the eye-line rotation) name more people at FPIR <= 1%?

Step ``embed`` embeds every LFW image once per variant ``margin:rotate`` (``0.1:1`` = margin 0.1, eye line
levelled) from the detections cached by bench/lfw_embeddings.py (fp32 encoder with mirror TTA, as the other
open-set figures), one ``.npz`` per variant in ``--dir``. Step ``score`` averages the unit embeddings of each
``--combos`` group (``+``-joined variants), renormalises, and runs bench/openset_tune.py's protocol on the *fit*
half of the split only (cohort and development people; the eval half is not touched): TPIR at measured FPIR <=
1% and <= 0.1%, raw template distance and the shipped symmetric cohort normalisation (k = 10).

    .venv/bin/python bench/openset_tta.py embed --root ../shared/data/lfw/lfw-deepfunneled \\
        --variants 0.15:1,0.1:1,0.2:1,0.15:0
    .venv/bin/python bench/openset_tta.py score --combos 0.15:1,0.1:1+0.15:1,0.1:1+0.15:1+0.2:1,0.15:0+0.15:1
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import numpy.typing as npt

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `bench` when run as a script

from bench.openset import TARGETS, draw_gallery, oracle_tpir, split_people, split_strangers
from bench.openset_tune import top_k_stats
from service.gallery.calibration import l2_matrix
from service.gallery.matching import template

F32 = npt.NDArray[np.float32]


def variant_file(folder: Path, variant: str) -> Path:
    margin, rotate = variant.split(":")
    return folder / f"margin{float(margin):g}-rotate{rotate}.npz"


def embed(root: Path, detections: Path, folder: Path, variants: list[str]) -> None:
    from bench.lfw_embeddings import stack_embeddings
    from embeddings import weights
    from embeddings.dataset import AlignSettings, detect_primary_faces, embed_detected
    from embeddings.detector import FaceDetector
    from embeddings.facenet import FaceNetEncoder

    paths = sorted(str(p.relative_to(root)) for p in root.glob("*/*.jpg"))
    found = detect_primary_faces(root, paths, detector=FaceDetector(), cache_file=detections)
    encoder = FaceNetEncoder(weights.resolve())
    folder.mkdir(parents=True, exist_ok=True)
    for variant in variants:
        out = variant_file(folder, variant)
        if out.is_file():
            continue
        margin, rotate = variant.split(":")
        start = time.perf_counter()
        embs = embed_detected(root, found, encoder=encoder, settings=AlignSettings(float(margin), rotate == "1", True))
        keys, arr = stack_embeddings({p: embs[p] for p in paths})
        names = np.array([k.split("/")[0] for k in keys])
        np.savez_compressed(out, embeddings=arr, paths=np.array(keys), names=names)
        print(f"{variant}: {len(keys)} images, {time.perf_counter() - start:.0f} s -> {out}", flush=True)


def combine(folder: Path, combo: str) -> tuple[F32, npt.NDArray[np.str_]]:
    """The renormalised mean of the unit embeddings of each variant in ``combo`` (``+``-joined), and the names."""
    parts = [np.load(variant_file(folder, v)) for v in combo.split("+")]
    if any(list(p["paths"]) != list(parts[0]["paths"]) for p in parts):
        raise SystemExit(f"{combo}: the variants embed different images")
    mean = np.mean([p["embeddings"].astype(np.float32) for p in parts], axis=0)
    return mean / np.linalg.norm(mean, axis=1, keepdims=True), parts[0]["names"].astype(str)


def score(x: F32, names: npt.NDArray[np.str_], seed: int, k: int = 10) -> dict[str, list[float]]:
    """bench/openset_tune.py's protocol (same split, cohort and galleries for a seed): TPIR at the targets for
    galleries of 100 people (mean of 20) and of the whole development pool."""
    fit, _ = split_people(names, seed)
    rng = np.random.default_rng(100 + seed)
    people = rng.permutation(sorted(fit))
    cohort_people, dev_people = people[: len(people) // 2], sorted(people[len(people) // 2 :])
    picks = [rng.permutation(np.flatnonzero(names == p))[: int(rng.integers(1, 4))] for p in cohort_people]
    cohort = np.stack([template(x[i]) for i in picks])
    members, pool, stranger_idx = split_strangers(names, dev_people, rng)
    out: dict[str, list[float]] = {"raw": [], "normalised": []}
    for size, repeats in ((100, 20), (len(pool), 1)):
        sums = {name: np.zeros(len(TARGETS)) for name in out}
        for _ in range(repeats):
            enrolled, mated_idx, owner = draw_gallery(members, pool, size, rng)
            templates = np.stack([template(x[e]) for e in enrolled])
            spread_t = top_k_stats(l2_matrix(templates, cohort), k)[0]
            scores = {}
            for key, idx in (("m", mated_idx), ("s", stranger_idx)):
                d = l2_matrix(x[idx], templates)
                spread_p = top_k_stats(l2_matrix(x[idx], cohort), k)[0]
                scores[key, "raw"] = d
                scores[key, "normalised"] = d - 0.5 * (spread_p[:, None] + spread_t[None, :])
            for name in out:
                got = [oracle_tpir(scores["m", name], scores["s", name], owner, t)[0] for t in TARGETS]
                sums[name] += np.array(got) / repeats
        for name in out:
            out[name].extend(sums[name].tolist())
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("step", choices=("embed", "score"))
    parser.add_argument("--dir", type=Path, default=Path("reports/openset-tta"))
    parser.add_argument("--root", type=Path, help="LFW deep-funneled folder (embed)")
    parser.add_argument("--detections", type=Path, default=Path("reports/lfw-view2/detections.json"))
    parser.add_argument("--variants", default="0.15:1,0.1:1,0.2:1,0.15:0")
    parser.add_argument("--combos", default="0.15:1,0.1:1+0.15:1,0.1:1+0.15:1+0.2:1,0.15:0+0.15:1")
    parser.add_argument("--seeds", default="0,1")
    args = parser.parse_args()
    if args.step == "embed":
        if args.root is None:
            parser.error("embed needs --root")
        embed(args.root, args.detections, args.dir, args.variants.split(","))
        return
    print(f"{'variants':>32} {'seed':>4} | 100 people raw 1% / 0.1%, normalised 1% / 0.1% | all: the same")
    for combo in args.combos.split(","):
        x, names = combine(args.dir, combo)
        for seed in (int(s) for s in args.seeds.split(",")):
            r = score(x, names, seed)
            raw, norm = r["raw"], r["normalised"]
            print(
                f"{combo:>32} {seed:>4} | {raw[0]:.3f} / {raw[1]:.3f}, {norm[0]:.3f} / {norm[1]:.3f}"
                f" | {raw[2]:.3f} / {raw[3]:.3f}, {norm[2]:.3f} / {norm[3]:.3f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
