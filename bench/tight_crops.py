"""Faces that fill the frame: detector misses on tight crops, without and with the padded retry.

Every 5-celebrity photo (fetched with the weights) is cropped to its detected face box shrunk by ``s`` of its
size (``s = 0``: the face touches all four borders; 0.1 and 0.2 cut into the face), then detected again with
the plain detector and with :func:`embeddings.padding.detect_with_padding`. Usage:

    .venv/bin/python bench/tight_crops.py
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from embeddings import weights
from embeddings.detector import FaceDetector
from embeddings.images import decode_image
from embeddings.padding import DEFAULT_PAD, detect_with_padding


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shrink", default="0,0.1,0.2", help="comma-separated shrink fractions of the box")
    parser.add_argument("--pad", type=float, default=DEFAULT_PAD)
    args = parser.parse_args()
    root = weights.sample_dataset_path()
    detector = FaceDetector()
    images = [decode_image(p.read_bytes()) for p in sorted(root.glob("*/*/*.jpg"))]
    boxes = [found[0].box if (found := detector.detect(img)) else None for img in images]
    print(f"{len(images)} photos, {sum(b is None for b in boxes)} without a face at full size; pad {args.pad}")
    for shrink in (float(s) for s in args.shrink.split(",")):
        n = plain = padded = 0
        seconds = 0.0
        for img, b in zip(images, boxes, strict=True):
            if b is None:
                continue
            x0, y0 = int(max(b.x + shrink * b.width / 2, 0)), int(max(b.y + shrink * b.height / 2, 0))
            x1 = int(min(b.x2 - shrink * b.width / 2, img.shape[1]))
            y1 = int(min(b.y2 - shrink * b.height / 2, img.shape[0]))
            crop = np.ascontiguousarray(img[y0:y1, x0:x1])
            n += 1
            plain += not detector.detect(crop)
            start = time.perf_counter()
            padded += not detect_with_padding(detector, crop, pad=args.pad)
            seconds += time.perf_counter() - start
        print(
            f"shrink {shrink:g}: {n} tight crops, no face: plain {plain}, padded retry {padded} "
            f"({1000 * seconds / max(n, 1):.0f} ms per crop with the retry)"
        )


if __name__ == "__main__":
    main()
