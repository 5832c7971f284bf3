"""Encoder precision: faces/s of fp32 (TensorFlow) vs the OpenVINO bf16 and int8 paths, and how close they are.

``speed`` (timed; run it under the shared lock): all precisions in one process on the same aligned crops of the
5-celebrity set, faces/s at batch 1, 8 and 32 without and with flip TTA (as the service runs it), the ratio to
fp32, plus fp32 with the old two-call flip TTA (originals, then mirror images) to show what the single
concatenated batch gives. Conversion to OpenVINO happens before timing (cached). Usage:

    flock /tmp/facerec-timed.lock .venv/bin/python bench/encoder_precision.py speed --out reports/encoder/speed.json

``compare`` (untimed): cross-precision agreement on LFW, from the ``--save-embeddings`` files that
``facerec eval lfw --encoder P`` wrote for each precision: per-face cosine to fp32, and the genuine / impostor
L2 distances of the pairs file for each precision and across precisions (fp32 gallery, fast-path probe):

    .venv/bin/python bench/encoder_precision.py compare --pairs pairs.txt --fp32 fp32.npz bf16.npz int8.npz
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import numpy.typing as npt

BATCHES = (1, 8, 32)


def faces_per_second(fn: Any, crops: npt.NDArray[np.uint8], batch: int, seconds: float) -> float:
    """Call ``fn`` on ``batch`` crops repeatedly for about ``seconds``; faces/s (after 2 warm-up calls)."""
    x = crops[:batch]
    fn(x)
    fn(x)
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds or n < 3:
        fn(x)
        n += 1
    return n * batch / (time.perf_counter() - start)


def speed(args: argparse.Namespace) -> None:
    from embeddings import weights
    from embeddings.encoders import PRECISIONS, create_encoder
    from embeddings.facenet import l2_normalize
    from embeddings.facenet_openvino import calibration_crops

    path = weights.resolve()
    crops = calibration_crops()
    while len(crops) < max(BATCHES):
        crops = np.concatenate([crops, crops])
    results: dict[str, Any] = {"crops": len(crops), "seconds_per_setting": args.seconds, "precisions": {}}
    encoders = {}
    for precision in args.precisions or PRECISIONS:
        start = time.perf_counter()
        enc = create_encoder(path, precision)
        enc.warm_up()
        encoders[precision] = enc
        results["precisions"][precision] = {"load_s": round(time.perf_counter() - start, 2)}
    for precision, enc in encoders.items():
        row = results["precisions"][precision]
        row["inference_precision"] = getattr(enc, "inference_precision", "f32")
        for flip in (False, True):
            for b in BATCHES:
                fps = faces_per_second(lambda x, e=enc, f=flip: e.encode(x, flip_tta=f), crops, b, args.seconds)
                row[f"{'flip' if flip else 'plain'}_b{b}"] = round(fps, 1)
                print(f"{precision:5s} flip={flip!s:5s} batch {b:2d}: {fps:7.1f} faces/s", flush=True)
        if precision == "fp32":

            def two_calls(x: npt.NDArray[np.uint8], e: Any = enc) -> npt.NDArray[np.float32]:
                from embeddings.align import prewhiten

                w = prewhiten(x)
                return l2_normalize(e.raw(w) + e.raw(np.ascontiguousarray(w[:, :, ::-1, :])))

            for b in BATCHES:
                fps = faces_per_second(two_calls, crops, b, args.seconds)
                row[f"flip_two_calls_b{b}"] = round(fps, 1)
                print(f"fp32  flip as two calls batch {b:2d}: {fps:7.1f} faces/s", flush=True)
    base = results["precisions"].get("fp32")
    if base:
        for row in results["precisions"].values():
            row["ratio_to_fp32"] = {
                k: round(row[k] / base[k], 2) for k in base if k.startswith(("plain_", "flip_b")) and k in row
            }
    print(json.dumps(results, indent=2))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2))


def _load(path: Path) -> dict[str, npt.NDArray[np.float32]]:
    data = np.load(path)
    return {str(p): e for p, e in zip(data["paths"], data["embeddings"], strict=True)}


def _pair_stats(a: dict[str, Any], b: dict[str, Any], pairs: list[Any]) -> dict[str, float]:
    same = np.array([pr.same for pr in pairs])
    d = np.array([float(np.linalg.norm(a[pr.a] - b[pr.b])) for pr in pairs])
    gen, imp = d[same], d[~same]
    pooled = np.sqrt((gen.var() + imp.var()) / 2)
    return {
        "genuine_mean": round(float(gen.mean()), 4),
        "impostor_mean": round(float(imp.mean()), 4),
        "d_prime": round(float((imp.mean() - gen.mean()) / pooled), 3),
    }


def compare(args: argparse.Namespace) -> None:
    from embeddings.evaluation import read_pairs

    pairs = read_pairs(args.pairs)
    ref = _load(args.fp32)
    results: dict[str, Any] = {"fp32": _pair_stats(ref, ref, pairs)}
    for path in args.others:
        other = _load(path)
        keys = sorted(set(ref) & set(other))
        cos = np.array([float(ref[k] @ other[k]) for k in keys])
        l2 = np.sqrt(np.maximum(0.0, 2 - 2 * cos))
        results[path.stem if path.stem != "embeddings" else path.parent.name] = {
            "faces": len(keys),
            "cosine_to_fp32_min": round(float(cos.min()), 5),
            "cosine_to_fp32_p01": round(float(np.percentile(cos, 1)), 5),
            "cosine_to_fp32_mean": round(float(cos.mean()), 5),
            "l2_to_fp32_max": round(float(l2.max()), 4),
            "l2_to_fp32_mean": round(float(l2.mean()), 4),
            "pairs_same_precision": _pair_stats(other, other, pairs),
            "pairs_fp32_vs_this": _pair_stats(ref, other, pairs),
        }
    print(json.dumps(results, indent=2))
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    sp = sub.add_parser("speed", help="faces/s per precision and batch size (timed)")
    sp.add_argument("--seconds", type=float, default=4.0, help="measuring time per setting")
    sp.add_argument("--precisions", nargs="*", default=None, help="default: all")
    sp.add_argument("--out", type=Path, default=None, help="write the figures as JSON here")
    cp = sub.add_parser("compare", help="cross-precision agreement on LFW embeddings (untimed)")
    cp.add_argument("--pairs", type=Path, required=True)
    cp.add_argument("--fp32", type=Path, required=True, help=".npz from facerec eval lfw --save-embeddings")
    cp.add_argument("others", type=Path, nargs="+", help=".npz files of the other precisions")
    cp.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    speed(args) if args.command == "speed" else compare(args)


if __name__ == "__main__":
    main()
