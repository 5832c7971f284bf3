"""CPU time per photo of the recognition pipeline's stages, and the throughput ceiling they set on this machine.

For each stage, in this process, one at a time: wall time and CPU time (user + system of the whole process,
``getrusage``, all threads) per item, over ``--seconds`` seconds of distinct photos round-robin:

* ``decode``: JPEG bytes -> upright RGB (``FaceAnalyzer.load_image``), per photo;
* ``detect``: the server's detector (OpenVINO MTCNN) on the decoded photo, per photo;
* ``encode``: the server's encoder (precision and flip TTA as configured) on the photos' aligned faces, in
  batches of 32 (what the micro-batcher reaches under load), per face.

``ceiling_photos_per_s`` = CPU cores / (decode + detect + faces per photo x encode) CPU-seconds: what the machine
could do with every core busy and no overhead at all, the bound on any serving figure on the same photos.

Usage::

    .venv/bin/python bench/cpu_budget.py --photos reports/e2e/photos/480p --out reports/cpu-budget.json
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.paths import write_report


def cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def measure(items: list[Any], fn: Callable[[Any], int], seconds: float) -> dict[str, float]:
    """Run ``fn`` on ``items`` round-robin (3 untimed calls first) for ``seconds``; ``fn`` returns how many units
    (photos or faces) it did. Wall ms per call (p50, mean), CPU ms per unit, units per second."""
    for item in items[:3]:
        fn(item)
    walls: list[float] = []
    units = 0
    cpu0, start = cpu_s(), time.perf_counter()
    while time.perf_counter() - start < seconds:
        for item in items:
            t = time.perf_counter()
            units += fn(item)
            walls.append(time.perf_counter() - t)
    wall, cpu = time.perf_counter() - start, cpu_s() - cpu0
    return {
        "calls": len(walls),
        "units": units,
        "wall_ms_p50": round(1000 * statistics.median(walls), 2),
        "wall_ms_mean": round(1000 * statistics.mean(walls), 2),
        "cpu_ms_per_unit": round(1000 * cpu / max(units, 1), 2),
        "cores_used": round(cpu / wall, 2),
        "units_per_s": round(units / wall, 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--photos", type=Path, required=True, help="a folder of JPEG photos (e.g. bench/e2e.py photos)")
    ap.add_argument("--seconds", type=float, default=15.0, help="measured seconds per stage")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()

    from service.bootstrap import default_analyzer
    from service.config import Settings

    settings = Settings()
    analyzer = default_analyzer(settings)
    analyzer.warm_up()
    blobs = [p.read_bytes() for p in sorted(args.photos.glob("*.jpg"))]
    if not blobs:
        raise SystemExit(f"no .jpg photos in {args.photos}")
    decoded = [analyzer.load_image(b) for b in blobs]
    found = [analyzer.detector.detect(rgb) for rgb in decoded]
    crops = [analyzer.align(rgb, d) for rgb, dets in zip(decoded, found, strict=True) for d in dets]
    batches = [np.stack([crops[(i + k) % len(crops)] for k in range(32)]) for i in range(0, len(crops), 32)]
    faces_per_photo = len(crops) / len(blobs)

    decode = measure(blobs, lambda b: (analyzer.load_image(b), 1)[1], args.seconds)
    detect = measure(decoded, lambda rgb: (analyzer.detector.detect(rgb), 1)[1], args.seconds)
    encode = measure(batches, lambda x: (analyzer.encoder.encode(x), len(x))[1], args.seconds)
    cores = os.cpu_count() or 1
    per_photo_ms = decode["cpu_ms_per_unit"] + detect["cpu_ms_per_unit"] + faces_per_photo * encode["cpu_ms_per_unit"]
    result = {
        "photos": len(blobs),
        "shape": list(decoded[0].shape),
        "faces_per_photo": round(faces_per_photo, 3),
        "encoder": {"precision": analyzer.config.encoder, "flip_tta": analyzer.config.flip_tta},
        "cores": cores,
        "decode": decode,
        "detect": detect,
        "encode_batch32": encode,
        "cpu_ms_per_photo": round(per_photo_ms, 2),
        "ceiling_photos_per_s": round(1000 * cores / per_photo_ms, 2),
        "ceiling_faces_per_s": round(1000 * cores / per_photo_ms * faces_per_photo, 2),
    }
    print(json.dumps(result, indent=1))
    write_report(args.out, result)


if __name__ == "__main__":
    main()
