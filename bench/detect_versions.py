"""The server's detector (``FaceDetector()``, defaults) of two or more checkouts side by side: detection latency
per photo set, each checkout in its own process, the processes taken in turn for ``--rounds`` rounds so that the
machine's drift weighs on all alike.

Photo sets: ``busy`` and ``portrait`` (bench/detect.py's 1080p photos: a 5-celebrity photo pasted on a busy
1920x1080 background, and the same photo as a 1080p portrait), ``640x480`` (bench/detect.py's), and each
``--photos`` folder of JPEGs (e.g. bench/e2e.py's ``photos/1080p`` and ``photos/480p``, at most ``--per-set``
of each). A process decodes its photos, runs 3 untimed detections of each, then times ``--repeats`` passes over
the set; a round's figure is the median ms per detection. Reported: the median over rounds of each checkout's
round medians, and its ratio to the first checkout's.

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
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

WORKER = r"""
import json, statistics, sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from bench.detect_images import background, paste, portrait, read_rgb, resized
from embeddings import weights
from embeddings.detector import FaceDetector
from embeddings.images import decode_image
repeats, per_set, folders = int(sys.argv[2]), int(sys.argv[3]), [f for f in sys.argv[4].split(",") if f]
celeb = read_rgb(sorted((weights.sample_dataset_path() / "val" / "ben_afflek").iterdir())[0])
bg = background(None)
sets = {"busy": [paste(resized(bg, 1920, 1080), celeb, 600, 660, 240)], "portrait": [portrait(celeb, 1920, 1080)],
        "640x480": [paste(resized(bg, 640, 480), celeb, 300, 170, 90)]}
for folder in folders:
    files = sorted(Path(folder).glob("*.jpg"))[:per_set]
    sets[Path(folder).name] = [decode_image(f.read_bytes()) for f in files]
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


def run_once(repo: Path, repeats: int, per_set: int, photos: str) -> dict[str, float]:
    """One worker process on ``repo``'s code: median ms per detection of each photo set."""
    env = {**os.environ, "PYTHONPATH": str(repo)}
    proc = subprocess.run(
        [sys.executable, "-c", WORKER, str(repo), str(repeats), str(per_set), photos],
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
    photos = ",".join(str(Path(p).resolve()) for p in args.photos.split(",") if p)
    rounds: dict[str, list[dict[str, float]]] = {str(r): [] for r in repos}
    started = time.time()
    for k in range(args.rounds):
        for repo in repos:
            rounds[str(repo)].append(run_once(repo, args.repeats, args.per_set, photos))
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
