"""Test photos of the end-to-end benchmark (``bench/e2e.py photos``): each held-out LFW face's central 150x150
scaled onto a 1920x1080 (x3) or 640x480 (x1.6) smooth background without faces, JPEG quality 90."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import numpy.typing as npt

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `bench` when run as a script

from bench.e2e_naive import decode


def _background(w: int, h: int, rng: np.random.Generator) -> npt.NDArray[np.uint8]:
    """A smooth colour gradient with low-frequency blotches (no faces, nothing MTCNN should fire on)."""
    import cv2

    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    c0, c1 = rng.uniform(40, 215, 3), rng.uniform(40, 215, 3)
    t = (xx / w * 0.6 + yy / h * 0.4)[..., None]
    img = c0 * (1 - t) + c1 * t
    blobs = cv2.resize(rng.normal(0, 25, (9, 16, 3)).astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC)
    return np.clip(img + blobs, 0, 255).astype(np.uint8)


def make_photo(face_path: Path, size: tuple[int, int], scale: float, rng: np.random.Generator) -> bytes:
    """JPEG (quality 90) of ``size`` (w, h) with the central 150x150 of an LFW image scaled by ``scale`` pasted
    at a random place (one face; LFW deep-funnelled images are 250x250 with the face centred)."""
    import cv2

    w, h = size
    src = decode(face_path.read_bytes())
    face = src[50:200, 50:200]
    side = round(150 * scale)
    face = np.asarray(cv2.resize(face, (side, side), interpolation=cv2.INTER_CUBIC), dtype=np.uint8)
    img = _background(w, h, rng)
    x, y = int(rng.integers(0, w - side)), int(rng.integers(0, h - side))
    img[y : y + side, x : x + side] = face
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(img, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok
    return bytes(buf)


def photos(args: argparse.Namespace) -> None:
    meta = json.loads((Path(args.data) / "held_out.json").read_text())
    rng = np.random.default_rng(args.seed)
    probes = [meta["held_out"][i] for i in rng.choice(len(meta["held_out"]), args.count, replace=False)]
    out = Path(args.out)
    for kind, size, scale in (("1080p", (1920, 1080), 3.0), ("480p", (640, 480), 1.6)):
        (out / kind).mkdir(parents=True, exist_ok=True)
        for k, pr in enumerate(probes):
            blob = make_photo(Path(args.lfw) / "lfw-deepfunneled" / pr["path"], size, scale, rng)
            (out / kind / f"{k:03d}_{pr['name']}.jpg").write_bytes(blob)
    (out / "photos.json").write_text(json.dumps(probes, indent=1))
    print(f"{len(probes)} photos each at 1920x1080 and 640x480 in {out}")
