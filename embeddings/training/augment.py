"""Augmentation and domain degradation of aligned 160x160 RGB uint8 crops (before prewhitening).

``augment``: horizontal flip (p=0.5), rotation within +-``max_degrees`` and scale within ``1 +- max_scale`` about
the crop centre, brightness (+-``max_brightness`` of 255) and contrast (x ``1 +- max_contrast``), and a Gaussian
blur (sigma 0.5..1.5) with probability ``p_blur``. All randomness comes from the ``rng`` passed in.

``degrade``: the "other camera" used by bench/finetune.py: grayscale, downscaled to ``size`` px (area) and back up
(bilinear), then JPEG at ``quality``. Deterministic.
"""

from __future__ import annotations

import cv2
import numpy as np
import numpy.typing as npt

Crop = npt.NDArray[np.uint8]


def flip(crop: Crop) -> Crop:
    """The mirror image (left-right)."""
    return np.ascontiguousarray(crop[:, ::-1, :])


def augment(
    crop: Crop,
    rng: np.random.Generator,
    *,
    max_degrees: float = 8.0,
    max_scale: float = 0.07,
    max_brightness: float = 0.12,
    max_contrast: float = 0.2,
    p_blur: float = 0.3,
) -> Crop:
    """One random photometric and geometric variant of ``crop`` (same shape, uint8)."""
    out = flip(crop) if rng.random() < 0.5 else crop
    h, w = out.shape[:2]
    angle = float(rng.uniform(-max_degrees, max_degrees))
    scale = float(rng.uniform(1.0 - max_scale, 1.0 + max_scale))
    matrix = cv2.getRotationMatrix2D(((w - 1) / 2.0, (h - 1) / 2.0), angle, scale)
    warped = cv2.warpAffine(out, matrix, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
    x = np.asarray(warped, dtype=np.float32)
    contrast = float(rng.uniform(1.0 - max_contrast, 1.0 + max_contrast))
    brightness = float(rng.uniform(-max_brightness, max_brightness)) * 255.0
    mean = x.mean()
    x = (x - mean) * contrast + mean + brightness
    out = np.clip(np.rint(x), 0, 255).astype(np.uint8)
    if rng.random() < p_blur:
        out = cv2.GaussianBlur(out, (0, 0), sigmaX=float(rng.uniform(0.5, 1.5)))
    return np.ascontiguousarray(out, dtype=np.uint8)


def degrade(crop: Crop, *, size: int = 40, quality: int = 30) -> Crop:
    """Grayscale (kept as 3 equal channels), down to ``size`` x ``size`` and back, then JPEG ``quality``."""
    h, w = crop.shape[:2]
    gray = cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY)
    small = cv2.resize(gray, (size, size), interpolation=cv2.INTER_AREA)
    back = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
    ok, buf = cv2.imencode(".jpg", back, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:  # pragma: no cover - OpenCV always encodes a valid uint8 image
        raise RuntimeError("JPEG encoding failed")
    decoded = np.asarray(cv2.imdecode(buf, cv2.IMREAD_GRAYSCALE), dtype=np.uint8)
    return np.ascontiguousarray(np.repeat(decoded[:, :, None], 3, axis=2), dtype=np.uint8)


def variants(crop: Crop, n: int, rng: np.random.Generator) -> list[Crop]:
    """``n`` training variants of a crop: the crop itself, its mirror image, then ``n - 2`` random ``augment``s."""
    out = [crop]
    if n >= 2:
        out.append(flip(crop))
    out.extend(augment(crop, rng) for _ in range(max(n - 2, 0)))
    return out[:n]
