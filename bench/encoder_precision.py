"""Encoder precision: faces/s of fp32 (TensorFlow) vs the OpenVINO bf16 and int8 paths, and how close they are.

``speed`` (timed; run it under the shared lock): all precisions in one process on the same aligned crops of the
5-celebrity set, faces/s at batch 1, 8 and 32 without and with flip TTA (as the service runs it), the ratio to
fp32, plus fp32 with the old two-call flip TTA (originals, then mirror images) to show what the single
concatenated batch gives. Conversion to OpenVINO happens before timing (cached). Usage:

    .venv/bin/python bench/encoder_precision.py speed --out reports/encoder/speed.json

Each setting is measured in ``--rounds`` interleaved rounds (all settings, then again) and its best round kept,
so that a burst of other work on a shared machine hits every precision alike and the least disturbed figure
counts.

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


def faces_per_second(fn: Any, crops: npt.NDArray[np.uint8], batch: int, seconds: float) -> tuple[float, float]:
    """Call ``fn`` on ``batch`` crops repeatedly for about ``seconds`` (after 2 warm-up calls): faces per wall
    second, and faces per CPU second of this process (all its threads; less sensitive to other work)."""
    x = crops[:batch]
    fn(x)
    fn(x)
    n, start, cpu = 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - start < seconds or n < 3:
        fn(x)
        n += 1
    return n * batch / (time.perf_counter() - start), n * batch / max(time.process_time() - cpu, 1e-9)


def speed(args: argparse.Namespace) -> None:
    from embeddings import weights
    from embeddings.encoders import PRECISIONS, create_encoder
    from embeddings.facenet import l2_normalize
    from embeddings.facenet_openvino import calibration_crops

    path = weights.resolve()
    crops = calibration_crops()
    while len(crops) < max(BATCHES):
        crops = np.concatenate([crops, crops])
    results: dict[str, Any] = {
        "crops": len(crops),
        "seconds_per_setting_and_round": args.seconds,
        "rounds": args.rounds,
        "precisions": {},
    }
    encoders = {}
    for precision in args.precisions or PRECISIONS:
        start = time.perf_counter()
        enc = create_encoder(path, precision)
        enc.warm_up()
        encoders[precision] = enc
        results["precisions"][precision] = {"load_s": round(time.perf_counter() - start, 2)}
    from embeddings.align import prewhiten

    def two_calls(x: npt.NDArray[np.uint8], e: Any = encoders.get("fp32")) -> npt.NDArray[np.float32]:
        w = prewhiten(x)
        return l2_normalize(e.raw(w) + e.raw(np.ascontiguousarray(w[:, :, ::-1, :])))

    settings: list[tuple[str, str, Any]] = []
    for precision, enc in encoders.items():
        results["precisions"][precision]["inference_precision"] = getattr(enc, "inference_precision", "f32")
        for flip in (False, True):
            for b in BATCHES:
                fn = lambda x, e=enc, f=flip: e.encode(x, flip_tta=f)  # noqa: E731
                settings.append((precision, f"{'flip' if flip else 'plain'}_b{b}", fn))
        if precision == "fp32":
            settings += [("fp32", f"flip_two_calls_b{b}", two_calls) for b in BATCHES]
    # Interleaved rounds, best of each: the machine is shared, so a setting's best round is its least disturbed.
    for round_ in range(args.rounds):
        for precision, key, fn in settings:
            fps, cpu_fps = faces_per_second(fn, crops, int(key.rsplit("_b", 1)[1]), args.seconds)
            row = results["precisions"][precision]
            row.setdefault(f"{key}_rounds", []).append(round(fps, 1))
            row[key] = max(row[f"{key}_rounds"])
            row.setdefault("per_cpu_second", {}).setdefault(key, []).append(round(cpu_fps, 1))
            print(
                f"round {round_ + 1} {precision:5s} {key:20s}: {fps:7.1f} faces/s, {cpu_fps:6.1f} per CPU s", flush=True
            )
    base = results["precisions"].get("fp32")
    if base:
        for row in results["precisions"].values():
            row["ratio_to_fp32"] = {
                k: round(row[k] / base[k], 2)
                for k in base
                if k.startswith(("plain_", "flip_b")) and not k.endswith("_rounds") and k in row
            }
    print(json.dumps(results, indent=2))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2))


def _load(path: Path) -> dict[str, npt.NDArray[np.float32]]:
    data = np.load(path)
    return {str(p): e for p, e in zip(data["paths"], data["embeddings"], strict=True)}


def _pair_stats(a: dict[str, Any], b: dict[str, Any], pairs: list[Any]) -> dict[str, float]:
    """Genuine / impostor L2 means, d', and the 10-fold accuracy when side A of each pair comes from ``a`` and
    side B from ``b`` (a pair with a face missing from either is scored at distance 2.0, as in the evaluation)."""
    from embeddings.evaluation import summarize

    same = np.array([pr.same for pr in pairs])
    folds = np.array([pr.fold for pr in pairs])
    d = np.array([float(np.linalg.norm(a[pr.a] - b[pr.b])) if pr.a in a and pr.b in b else 2.0 for pr in pairs])
    gen, imp = d[same], d[~same]
    pooled = np.sqrt((gen.var() + imp.var()) / 2)
    summary = summarize(d, same, folds)
    return {
        "genuine_mean": round(float(gen.mean()), 4),
        "impostor_mean": round(float(imp.mean()), 4),
        "d_prime": round(float((imp.mean() - gen.mean()) / pooled), 3),
        "accuracy_mean": round(float(summary["accuracy_mean"]), 4),
        "tar_at_far_1e-3": round(float(summary["tar_at_far_1e-3"]), 4),
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
    sp.add_argument("--seconds", type=float, default=2.0, help="measuring time per setting and round")
    sp.add_argument("--rounds", type=int, default=3, help="interleaved rounds; each setting's best round is kept")
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
