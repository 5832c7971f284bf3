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
import numpy.typing as npt
from tqdm import tqdm

from embeddings.types import EMBEDDING_DIM


def stack_embeddings(
    embeddings: dict[str, npt.NDArray[np.float32] | None],
) -> tuple[list[str], npt.NDArray[np.float32]]:
    """The images with a face and their embeddings as one (N, 128) array."""
    found = [(k, v) for k, v in embeddings.items() if v is not None]
    keys = [k for k, _ in found]
    arr = np.stack([v for _, v in found]) if found else np.zeros((0, EMBEDDING_DIM), np.float32)
    return keys, arr.astype(np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--detections", type=Path, required=True, help="JSON detection cache (read and extended)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--limit", type=int, default=0, help="only the first N images (0 = all)")
    parser.add_argument(
        "--precision", default="fp32", help="encoder precision (fp32, the tables' own; bf16, the server's default)"
    )
    parser.add_argument("--margin", type=float, default=None, help="alignment margin (default: the service's)")
    parser.add_argument("--rotate", choices=("on", "off"), default=None, help="level the eye line (default: on)")
    args = parser.parse_args()

    from embeddings import weights
    from embeddings.analyzer import AnalyzerConfig
    from embeddings.dataset import AlignSettings, detect_primary_faces, embed_detected
    from embeddings.detector import FaceDetector
    from embeddings.encoders import create_encoder

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
    margin = cfg.margin if args.margin is None else args.margin
    rotate = cfg.rotate if args.rotate is None else args.rotate == "on"
    settings = AlignSettings(margin, rotate, cfg.flip_tta)
    encoder = create_encoder(weights.resolve(), args.precision)
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
        f"{settings.label}, {args.precision} encoder; detect {detect_s:.0f} s, encode {encode_s:.0f} s -> {args.out}"
    )


if __name__ == "__main__":
    main()
