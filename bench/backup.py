"""How long ``facerec backup`` and ``facerec restore`` take, and how large a backup is, for a gallery of
``--faces`` faces (``--per-subject`` a subject) with their stored crops.

The data dir is made with the embedded gallery (``open_gallery``): unit embeddings and 160x160 crops of smooth
noise (so their PNGs are about the size of real face crops), ``add_faces_many`` in chunks, the index snapshot
saved as a server leaves it. Then ``facerec backup`` and ``facerec restore`` run as the CLI runs them (a fresh
process each), timed from outside; reports seconds, sizes (MiB) and the manifest's counts.

    python bench/backup.py --faces 20000 --out reports/backup.json
"""

from __future__ import annotations

import argparse
import json
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

from bench.paths import REPO, write_report


def make_data_dir(data: Path, faces: int, per_subject: int) -> float:
    """A data dir holding ``faces`` faces with crops; the seconds it took."""
    from service.gallery import NewFace
    from service.gallery.local import open_gallery

    start = time.perf_counter()
    rng = np.random.default_rng(0)
    coarse = rng.integers(0, 255, (64, 20, 20, 3), dtype=np.uint8)
    crops = [cv2.resize(c, (160, 160), interpolation=cv2.INTER_CUBIC) for c in coarse]  # 64 distinct crops
    gallery = open_gallery(data)
    try:
        subjects = gallery.create_subjects([(f"person {i}", None) for i in range(-(-faces // per_subject))])
        for first in range(0, faces, 1000):
            batch: dict[str, list[Any]] = {}
            for f in range(first, min(first + 1000, faces)):
                e = rng.standard_normal(128).astype(np.float32)
                face = NewFace(e / np.linalg.norm(e), "facenet-20170512-110547", crop=crops[f % len(crops)])
                batch.setdefault(subjects[f // per_subject].id, []).append(face)
            gallery.add_faces_many(batch)
        gallery.save_snapshot()
    finally:
        gallery.close()
    return time.perf_counter() - start


def size_mib(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2**20


def cli(*args: str) -> tuple[float, dict[str, Any]]:
    """Run ``facerec ARGS --json`` in a fresh process; its wall seconds and JSON answer."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "2"}
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "service.cli", *args, "--json"], cwd=REPO, env=env, capture_output=True, text=True
    )
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"facerec {' '.join(args)} failed:\n{done.stderr}")
    return seconds, json.loads(done.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--faces", type=int, default=20_000)
    parser.add_argument("--per-subject", type=int, default=5)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="facerec-backup-bench-") as tmp:
        data, dest, restored = Path(tmp) / "data", Path(tmp) / "backup", Path(tmp) / "restored"
        made = make_data_dir(data, args.faces, args.per_subject)
        backup_s, manifest = cli("backup", str(dest), "--data", str(data))
        restore_s, _ = cli("restore", str(dest), "--data", str(restored))
        report = {
            "faces": args.faces,
            "per_subject": args.per_subject,
            "make_data_dir_s": round(made, 2),
            "data_dir_mib": round(size_mib(data), 1),
            "backup_s": round(backup_s, 2),
            "backup_mib": round(size_mib(dest), 1),
            "restore_s": round(restore_s, 2),
            "counts": manifest["counts"],
            "skipped": sorted(manifest["skipped"]),
        }
    print(json.dumps(report, indent=1))
    write_report(args.out, report)


if __name__ == "__main__":
    main()
