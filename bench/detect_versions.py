"""The server's detector (``FaceDetector()``, defaults) of two or more checkouts side by side: detection latency
per photo set, each checkout in its own process, the processes taken in turn for ``--rounds`` rounds so that the
machine's drift weighs on all alike.

Photo sets: bench/detect.py's timing photos, ``1080p`` (a 5-celebrity photo on a busy 1920x1080 background),
``1080p_portrait`` and ``640x480`` (:func:`bench.detect_images.timing_photos`), and ``photos/<folder>`` for each
``--photos`` folder of JPEGs (e.g. bench/e2e.py's ``photos/1080p`` and ``photos/480p``, at most ``--per-set`` of
each). This process makes and decodes them once and hands the same pixels to every checkout's process, which
imports only its detector, runs 3 untimed detections of each photo, then times ``--repeats`` passes over each
set; a round's figure is the median ms per detection. Reported: the median over rounds of each checkout's round
medians, and its ratio to the first checkout's.

Usage (repository root; ``base`` a checkout of the commit to compare with, e.g. ``git worktree add base HEAD~1``):

    PYTHONPATH=. .venv/bin/python bench/detect_versions.py --repos base,. \\
        --photos reports/e2e/photos/1080p,reports/e2e/photos/480p --out reports/detect-versions.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.detect_images import Image, background, timing_photos  # noqa: E402
from embeddings.images import decode_image  # noqa: E402

WORKER = r"""
import json, statistics, sys, time
import numpy as np
sys.path.insert(0, sys.argv[1])
from embeddings.detector import FaceDetector
repeats = int(sys.argv[2])
with np.load(sys.argv[3]) as saved:
    sets = {}
    for key in saved.files:
        name, _, _ = key.rpartition("/")
        sets.setdefault(name, []).append(saved[key])
detector = FaceDetector()
out = {}
for name, images in sets.items():
    for image in images:
        for _ in range(3):
            detector.detect(image)
    times = []
    for _ in range(repeats):
        for image in images:
            start = time.perf_counter()
            detector.detect(image)
            times.append((time.perf_counter() - start) * 1000.0)
    out[name] = statistics.median(times)
print(json.dumps(out))
"""
"""One checkout's process: only its detector is imported from it; the photos come ready from the parent."""


def photo_sets(folders: list[Path], per_set: int) -> dict[str, list[Image]]:
    """bench/detect.py's timing photos (one a set) and up to ``per_set`` photos of each folder (a set named by
    the folder), decoded once here so that every checkout detects the same pixels."""
    sets: dict[str, list[Image]] = {name: [image] for name, image in timing_photos(background(None)).items()}
    for folder in folders:
        files = sorted(folder.glob("*.jpg"))[:per_set]
        sets[f"photos/{folder.name}"] = [decode_image(f.read_bytes()) for f in files]
    return sets


def run_once(repo: Path, repeats: int, photos: Path) -> dict[str, float]:
    """One worker process on ``repo``'s code: median ms per detection of each photo set in ``photos``."""
    env = {**os.environ, "PYTHONPATH": str(repo)}
    proc = subprocess.run(
        [sys.executable, "-c", WORKER, str(repo), str(repeats), str(photos)],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    if proc.returncode != 0:
        raise SystemExit(f"worker on {repo} failed:\n{proc.stderr[-3000:]}")
    result: dict[str, float] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repos", default=".", help="comma-separated checkouts; the first is the baseline")
    parser.add_argument("--photos", default="", help="comma-separated folders of JPEG photos (also timed)")
    parser.add_argument("--per-set", type=int, default=20, help="photos used from each --photos folder")
    parser.add_argument("--repeats", type=int, default=5, help="timed passes over each set in a process")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    repos = [Path(r).resolve() for r in args.repos.split(",")]
    sets = photo_sets([Path(p) for p in args.photos.split(",") if p], args.per_set)
    rounds: dict[str, list[dict[str, float]]] = {str(r): [] for r in repos}
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="detect-versions-") as tmp:
        photos = Path(tmp) / "photos.npz"
        arrays: dict[str, Any] = {f"{name}/{k}": im for name, images in sets.items() for k, im in enumerate(images)}
        np.savez(photos, **arrays)
        for k in range(args.rounds):
            for repo in repos:
                rounds[str(repo)].append(run_once(repo, args.repeats, photos))
                print(f"round {k + 1} {repo.name}: {rounds[str(repo)][-1]}", flush=True)
    summary: dict[str, dict[str, dict[str, float]]] = {}
    base = str(repos[0])
    for key, results in rounds.items():
        summary[key] = {}
        for name in results[0]:
            p50 = statistics.median(r[name] for r in results)
            base_p50 = statistics.median(r[name] for r in rounds[base])
            summary[key][name] = {"p50_ms": round(p50, 1), "ratio_to_first": round(p50 / base_p50, 3)}
    report = {"rounds": rounds, "summary": summary, "seconds": round(time.time() - started, 1)}
    print(json.dumps(summary, indent=2))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
