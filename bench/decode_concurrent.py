"""Peak memory of a real server under concurrent large uploads, with the decode budget off and on.

For each value of ``--budgets`` (``FACEREC_DECODE_BUDGET_MP``; 0 = no limit) a fresh ``facerec serve`` (empty
gallery, rate limit off) gets one warm-up request, then ``--clients`` requests at once, each a ~``--megapixels``
JPEG (smooth noise with a face pasted in, quality 80: under the 10 MiB upload limit) to ``--route``. The server's
RSS is sampled every 50 ms from ``/proc``, and its high-water mark (``VmHWM``) read at the end; all in MiB
(2**20 bytes), with the wall time of the concurrent requests and their statuses.

    python bench/decode_concurrent.py --clients 12 --budgets 0,80 --out reports/decode-concurrent.json
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import cv2
import httpx
import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.serverproc import BenchServer  # noqa: E402
from tests.conftest import image_files  # noqa: E402


def photo(megapixels: float, face: Path) -> bytes:
    """A JPEG of ``megapixels`` (4:3) with the photo ``face`` pasted in at 4x."""
    width = int((megapixels * 1e6 * 4 / 3) ** 0.5)
    height = int(megapixels * 1e6 / width)
    rng = np.random.default_rng(0)
    coarse = rng.integers(0, 255, (height // 10, width // 10, 3), dtype=np.uint8)
    pixels = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)
    portrait = np.asarray(Image.open(face).convert("RGB"))
    big = cv2.resize(portrait, (portrait.shape[1] * 4, portrait.shape[0] * 4))
    pixels[1000 : 1000 + big.shape[0], 1000 : 1000 + big.shape[1]] = big
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=80)
    return buf.getvalue()


def status_mib(pid: int, key: str) -> float:
    line = next(ln for ln in Path(f"/proc/{pid}/status").read_text().splitlines() if ln.startswith(key))
    return int(line.split()[1]) / 1024


def run(budget: float, data: bytes, clients: int, route: str) -> dict[str, Any]:
    """One server with ``budget``: its RSS before, its peak under ``clients`` concurrent requests, and after."""
    with tempfile.TemporaryDirectory() as tmp:
        server = BenchServer(
            Path(tmp) / "data", Path(tmp) / "server.log", env={"FACEREC_DECODE_BUDGET_MP": str(budget)}
        )
        server.start()
        try:
            with httpx.Client(base_url=server.url, timeout=600) as client:
                assert client.post(route, files={"image": ("p.jpg", data, "image/jpeg")}).status_code == 200
            before = status_mib(server.pid, "VmRSS:")
            statuses: list[int] = []

            def one() -> None:
                with httpx.Client(base_url=server.url, timeout=600) as client:
                    statuses.append(client.post(route, files={"image": ("p.jpg", data, "image/jpeg")}).status_code)

            threads = [threading.Thread(target=one) for _ in range(clients)]
            start = time.monotonic()
            for t in threads:
                t.start()
            sampled = 0.0
            while any(t.is_alive() for t in threads):
                sampled = max(sampled, status_mib(server.pid, "VmRSS:"))
                time.sleep(0.05)
            seconds = time.monotonic() - start
            return {
                "budget_mp": budget,
                "rss_before_mib": round(before, 1),
                "rss_peak_sampled_mib": round(sampled, 1),
                "hwm_mib": round(status_mib(server.pid, "VmHWM:"), 1),
                "rss_after_mib": round(status_mib(server.pid, "VmRSS:"), 1),
                "seconds": round(seconds, 2),
                "statuses": sorted(statuses),
            }
        finally:
            server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=12)
    parser.add_argument("--budgets", default="0,80", help="Comma-separated FACEREC_DECODE_BUDGET_MP values.")
    parser.add_argument("--megapixels", type=float, default=39.9)
    parser.add_argument("--route", default="/v1/detect")
    parser.add_argument(
        "--dataset", type=Path, default=Path.home() / ".cache/facerec/datasets/5-celebrity-faces-dataset"
    )
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    face = image_files(args.dataset / "val" / "madonna")[0]
    data = photo(args.megapixels, face)
    print(f"photo: {len(data) / 2**20:.1f} MiB", flush=True)
    results = []
    for budget in (float(b) for b in args.budgets.split(",")):
        result = run(budget, data, args.clients, args.route)
        print(json.dumps(result), flush=True)
        results.append(result)
    report = {"clients": args.clients, "megapixels": args.megapixels, "route": args.route, "results": results}
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
