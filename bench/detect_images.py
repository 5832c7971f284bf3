"""Test images for bench/detect.py: LFW photos read as RGB, pasted onto backgrounds at a chosen face height,
portrait crops, and canvases of several cut-out faces. Images are RGB uint8 (H, W, 3)."""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt

Image = npt.NDArray[np.uint8]
Rows = npt.NDArray[np.float64]
"""Detections as rows ``(x1, y1, x2, y2, confidence, 5 landmark x, 5 landmark y)`` in source pixels."""


def read_rgb(path: Path) -> Image:
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise SystemExit(f"cannot read {path}")
    return np.ascontiguousarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))


def background(path: Path | None) -> Image:
    """The canvas photo: ``path``, or scikit-learn's ``china.jpg``, or (neither available) a smooth gradient."""
    if path is None:
        try:
            import sklearn

            path = Path(sklearn.__file__).parent / "datasets" / "images" / "china.jpg"
        except ImportError:
            path = None
    if path is not None and path.is_file():
        return read_rgb(path)
    ys, xs = np.mgrid[0:480, 0:640]
    return np.stack([xs * 255 // 640, ys * 255 // 480, np.full_like(xs, 128)], axis=-1).astype(np.uint8)


def paste(canvas: Image, photo: Image, height: int, x: int, y: int) -> Image:
    """``canvas`` with ``photo`` resized to ``height`` px high pasted with its top-left at (x, y)."""
    width = round(photo.shape[1] * height / photo.shape[0])
    small = cv2.resize(
        photo, (width, height), interpolation=cv2.INTER_AREA if height < photo.shape[0] else cv2.INTER_LINEAR
    )
    out = canvas.copy()
    h, w = min(height, out.shape[0] - y), min(width, out.shape[1] - x)
    out[y : y + h, x : x + w] = small[:h, :w]
    return out


def portrait(photo: Image, width: int, height: int) -> Image:
    """``photo`` upscaled to ``height`` px high and centred, its left and right edge columns repeated out to
    ``width`` (a plain studio-like background)."""
    w = round(photo.shape[1] * height / photo.shape[0])
    big = cv2.resize(photo, (w, height), interpolation=cv2.INTER_CUBIC)
    left = (width - w) // 2
    return np.ascontiguousarray(cv2.copyMakeBorder(big, 0, 0, left, width - w - left, cv2.BORDER_REPLICATE))


def resized(image: Image, width: int, height: int) -> Image:
    return np.ascontiguousarray(cv2.resize(image, (width, height), interpolation=cv2.INTER_CUBIC))


def timing_photos(bg: Image) -> dict[str, Image]:
    """The detection latency photos (bench/detect.py's docstring): ``1080p`` (a 5-celebrity photo, 600 px high,
    on the busy background ``bg`` at 1920x1080), ``1080p_portrait`` and ``640x480``."""
    from embeddings import weights

    celeb = read_rgb(sorted((weights.sample_dataset_path() / "val" / "ben_afflek").iterdir())[0])
    return {
        "1080p": paste(resized(bg, 1920, 1080), celeb, 600, 660, 240),
        "1080p_portrait": portrait(celeb, 1920, 1080),
        "640x480": paste(resized(bg, 640, 480), celeb, 300, 170, 90),
    }


def face_cutout(image: Image, rows: Rows) -> Image | None:
    """The largest face of ``image`` with half a box of margin around it, or ``None``."""
    if len(rows) == 0:
        return None
    x1, y1, x2, y2 = rows[np.argmax((rows[:, 2] - rows[:, 0]) * (rows[:, 3] - rows[:, 1])), :4]
    mx, my = (x2 - x1) * 0.5, (y2 - y1) * 0.5
    crop = image[max(int(y1 - my), 0) : int(y2 + my), max(int(x1 - mx), 0) : int(x2 + mx)]
    return crop if min(crop.shape[:2]) >= 24 else None


def make_canvases(bg: Image, cutouts: Sequence[Image], count: int, rng: random.Random) -> list[Image]:
    """``count`` 1280x960 canvases with 4-6 faces each at 40-320 px (cut-out height), without overlaps."""
    base = resized(bg, 1280, 960)
    canvases = []
    for _ in range(count):
        canvas = base.copy()
        taken: list[tuple[int, int, int, int]] = []
        for _ in range(rng.randint(4, 6)):
            face = rng.choice(cutouts)
            for _attempt in range(50):
                h = rng.randint(40, 320)
                w = round(face.shape[1] * h / face.shape[0])
                x, y = rng.randint(0, 1280 - w), rng.randint(0, 960 - h)
                if all(x + w <= a or a + c <= x or y + h <= b or b + d <= y for a, b, c, d in taken):
                    canvas = paste(canvas, face, h, x, y)
                    taken.append((x, y, w, h))
                    break
        canvases.append(canvas)
    return canvases
