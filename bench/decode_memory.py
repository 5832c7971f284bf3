"""Peak memory of decoding one large photo: how much resident memory ``decode_image`` adds for a moment.

A synthetic photo of ``--megapixels`` (default 39.9, just under the service's 40 MP limit; smooth noise with a
face pasted in, so that it compresses like a photo) is written as a JPEG, the same JPEG with EXIF orientation 6
(a phone's portrait shot, stored landscape: decoded, then turned), and a PNG (Pillow's path). Each is decoded in
a fresh Python process (``--repos``: one or more checkouts, e.g. an export of an older commit, to compare
side by side), which reports its RSS before the call and its peak RSS (``ru_maxrss``) after it; the figure is
the difference, in MiB (2**20 bytes), with the decode's wall time. The image itself (H x W x 3 bytes) is given
for scale: the least any decode must hold.

    python bench/decode_memory.py --repos .,/tmp/facerec-old --out reports/decode-memory.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]

CHILD = """
import resource, sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from embeddings.images import decode_image
data = Path(sys.argv[2]).read_bytes()
rss = int(Path("/proc/self/statm").read_text().split()[1]) * 4096 / 2**20
start = time.perf_counter()
pixels = decode_image(data)
seconds = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(f"{rss} {peak} {seconds} {pixels.shape[0]} {pixels.shape[1]}")
"""


def photos(folder: Path, megapixels: float) -> dict[str, Path]:
    """The three test files in ``folder``: ``jpeg``, ``jpeg_exif6``, ``png``."""
    width = int((megapixels * 1e6 * 4 / 3) ** 0.5)
    height = int(megapixels * 1e6 / width)
    rng = np.random.default_rng(0)
    coarse = rng.integers(0, 255, (height // 10, width // 10, 3), dtype=np.uint8)
    pixels = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)
    yy, xx = np.mgrid[0:800, 0:600]
    face = (((yy - 400) / 400.0) ** 2 + ((xx - 300) / 300.0) ** 2 < 1)[:, :, None] * np.array([180, 140, 120])
    pixels[1000:1800, 1000:1600] = np.maximum(pixels[1000:1800, 1000:1600], face.astype(np.uint8))
    out = {"jpeg": folder / "photo.jpg", "jpeg_exif6": folder / "photo-exif6.jpg", "png": folder / "photo.png"}
    img = Image.fromarray(pixels)
    img.save(out["jpeg"], quality=90)
    exif = Image.Exif()
    exif[0x0112] = 6
    img.save(out["jpeg_exif6"], quality=90, exif=exif.tobytes())
    img.save(out["png"], compress_level=1)
    return out


def measure(repo: Path, path: Path) -> dict[str, Any]:
    """One decode of ``path`` by ``repo``'s code in a fresh interpreter."""
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(repo), str(path)], check=True, capture_output=True, text=True
    )
    rss, peak, seconds, height, width = done.stdout.split()
    return {
        "added_mib": round(float(peak) - float(rss), 1),
        "image_mib": round(int(height) * int(width) * 3 / 2**20, 1),
        "seconds": round(float(seconds), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repos", default=".", help="Comma-separated checkouts whose decode_image to measure.")
    parser.add_argument("--megapixels", type=float, default=39.9)
    parser.add_argument("--rounds", type=int, default=3, help="Fresh processes per file and repo (medians kept).")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    repos = [Path(r).resolve() for r in args.repos.split(",")]
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        files = photos(Path(tmp), args.megapixels)
        for repo in repos:
            for kind, path in files.items():
                runs = [measure(repo, path) for _ in range(args.rounds)]
                middle = {key: float(np.median([r[key] for r in runs])) for key in runs[0]}
                results.setdefault(str(repo), {})[kind] = middle | {"file_mib": round(path.stat().st_size / 2**20, 1)}
                print(
                    f"{repo} {kind}: +{middle['added_mib']} MiB (image {middle['image_mib']} MiB), "
                    f"{middle['seconds']} s",
                    flush=True,
                )
    report = {"megapixels": args.megapixels, "rounds": args.rounds, "results": results}
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
