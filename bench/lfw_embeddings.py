"""Embed every image of an LFW-layout folder with the production pipeline and save them as one .npz.

Used by the gallery benchmarks (real embeddings for recall and open-set calibration). Detections are cached in
a JSON file shared with ``facerec eval lfw`` (same format), so the slow step runs once; an existing ``--out`` is
extended (only images it lacks, e.g. misses since found by the padded retry, are encoded). Usage:

    .venv/bin/python bench/lfw_embeddings.py --root ../shared/data/lfw/lfw-deepfunneled \
        --detections reports/lfw-view2/detections.json --out reports/lfw_embeddings.npz
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
from tqdm import tqdm


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--detections", type=Path, required=True, help="JSON detection cache (read and extended)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--limit", type=int, default=0, help="only the first N images (0 = all)")
    args = parser.parse_args()

    from embeddings import weights
    from embeddings.analyzer import AnalyzerConfig
    from embeddings.dataset import AlignSettings, detect_primary_faces, embed_detected, stack_embeddings
    from embeddings.detector import FaceDetector
    from embeddings.facenet import FaceNetEncoder

    paths = sorted(str(p.relative_to(args.root)) for p in args.root.glob("*/*.jpg"))
    if args.limit:
        paths = paths[: args.limit]
    args.detections.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with tqdm(total=len(paths), desc="detect") as bar:
        detections = detect_primary_faces(
            args.root, paths, detector=FaceDetector(), cache_file=args.detections, progress=bar.update
        )
    detect_s = time.perf_counter() - start
    cfg = AnalyzerConfig()
    settings = AlignSettings(cfg.margin, cfg.rotate, cfg.flip_tta)
    encoder = FaceNetEncoder(weights.resolve())
    known: dict[str, np.ndarray] = {}
    if args.out.is_file():
        old = np.load(args.out, allow_pickle=False)
        known = {str(p): e for p, e in zip(old["paths"], old["embeddings"], strict=True)}
    todo = {p: detections[p] for p in paths if p not in known}
    start = time.perf_counter()
    with tqdm(total=len(todo), desc="encode") as bar:
        embs = embed_detected(args.root, todo, encoder=encoder, settings=settings, progress=bar.update)
    embs.update({p: known[p] for p in paths if p in known})
    embs = {p: embs[p] for p in paths}  # path order
    encode_s = time.perf_counter() - start
    keys, arr = stack_embeddings(embs)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out, embeddings=arr, paths=np.array(keys), names=np.array([k.split("/")[0] for k in keys]))
    print(
        f"{len(keys)} of {len(paths)} images embedded ({len(paths) - len(keys)} detector misses), "
        f"{settings.label}; detect {detect_s:.0f} s, encode {encode_s:.0f} s -> {args.out}"
    )


if __name__ == "__main__":
    main()
