"""Peak memory of ``facerec photos index`` on a folder of large photos: the read-ahead of photo files.

Makes ``--photos`` synthetic photos of ``--megapixels`` (smooth noise with fine grain, saved as JPEG quality 95,
about 17 MB each at 24 MP, like a camera's), then indexes them with ``facerec photos index`` in a fresh data dir,
once per checkout of ``--repos`` (e.g. an export of an older commit, to compare side by side), each in its own
process; reports the process's peak RSS (``ru_maxrss``, MiB) and wall time.

    python bench/photos_index_memory.py --repos .,/tmp/facerec-old --out reports/photos-index-memory.json
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `bench` when run as a script

from bench.paths import write_report


def make_photos(folder: Path, n: int, megapixels: float) -> int:
    """``n`` JPEGs in ``folder``; their total size in bytes."""
    width = int((megapixels * 1e6 * 3 / 2) ** 0.5)
    height = int(megapixels * 1e6 / width)
    rng = np.random.default_rng(0)
    coarse = rng.integers(0, 255, (height // 8, width // 8, 3), dtype=np.uint8)
    base = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)
    for i in range(n):
        grain = rng.integers(0, 40, (height, width, 1), dtype=np.uint8)
        pixels = cv2.add(np.roll(base, i * 37, axis=1), grain)
        cv2.imwrite(str(folder / f"p{i:03d}.jpg"), pixels, [cv2.IMWRITE_JPEG_QUALITY, 95])
    return sum(p.stat().st_size for p in folder.iterdir())


def index(repo: Path, photos: Path, data: Path) -> dict[str, Any]:
    """Run ``facerec photos index`` from ``repo``; its peak RSS (MiB), wall time (s) and last output line."""
    env = {**os.environ, "PYTHONPATH": str(repo), "FACEREC_PHOTO_LIBRARY": "true", "TF_CPP_MIN_LOG_LEVEL": "2"}
    cmd = [sys.executable, "-m", "service.cli", "photos", "index", str(photos), "--data", str(data)]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=repo, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    output = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{repo}: facerec photos index failed:\n{output}")
    lines = [line for line in output.splitlines() if line.strip()]
    return {"repo": str(repo), "peak_rss_mib": usage.ru_maxrss / 1024, "seconds": seconds, "said": lines[-1]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repos", default=".", help="comma-separated checkouts to run the CLI from")
    parser.add_argument("--photos", type=int, default=80)
    parser.add_argument("--megapixels", type=float, default=24.0)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="photos-index-memory-") as tmp:
        folder = Path(tmp) / "photos"
        folder.mkdir()
        total = make_photos(folder, args.photos, args.megapixels)
        print(f"{args.photos} photos of {args.megapixels} MP, {total / 2**20:.0f} MiB in all")
        runs = []
        for i, repo in enumerate(Path(r).resolve() for r in args.repos.split(",")):
            run = index(repo, folder, Path(tmp) / f"data-{i}")
            print(f"{run['repo']}: peak RSS {run['peak_rss_mib']:.0f} MiB, {run['seconds']:.1f} s ({run['said']})")
            runs.append(run)
    report = {"photos": args.photos, "megapixels": args.megapixels, "bytes": total, "runs": runs}
    write_report(args.out, report)


if __name__ == "__main__":
    main()
