"""Face alignment and the model's input normalisation, shared by serving, evaluation and training.

``align_face`` turns a detection into a 160x160 RGB crop: the crop is centred on the detector's box, enlarged by
``margin`` (a fraction of the box size, split evenly over both sides), optionally rotated about the box centre so
that the eye line is level, and resampled in one affine warp (area-downscaled first when the face is large, so
that big faces do not alias). ``prewhiten`` is the per-image standardisation the FaceNet weights were trained with.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import numpy.typing as npt

from embeddings.types import Detection

CROP_SIZE = 160
"""Side of the square crop fed to FaceNet, pixels."""

DEFAULT_MARGIN = 0.15
"""Default total margin as a fraction of the box size (0.15 adds 7.5% of the box width on the left and on the right)."""

BORDER_FILL = (128, 128, 128)
"""RGB of crop pixels that fall outside the image (a face at or cut by the image border). Mid-grey, not black:
FaceNet's input is standardised per image, and a black band drags the crop's mean and spread. On tight crops of
held-out LFW people (cut 5% into the face on each side) it raised TAR at FAR 1e-3 against another photo of the
person from 0.938 to 0.946, and from 0.842 to 0.890 cut 10% in; faces inside the image are unchanged
(docs/OPENSET.md, "Faces that fill the frame")."""


def eye_angle(detection: Detection) -> float:
    """Angle of the line from the image-left eye to the image-right eye, radians (0 = level, positive = clockwise)."""
    (lx, ly), (rx, ry) = detection.landmarks.left_eye, detection.landmarks.right_eye
    return math.atan2(ry - ly, rx - lx)


def align_face(
    image: npt.NDArray[np.uint8],
    detection: Detection,
    *,
    margin: float = DEFAULT_MARGIN,
    rotate: bool = True,
    size: int = CROP_SIZE,
) -> npt.NDArray[np.uint8]:
    """Crop ``detection`` out of ``image`` (RGB uint8, H x W x 3) into a ``size`` x ``size`` RGB uint8 crop.

    ``margin`` is the total extra width/height as a fraction of the box; ``rotate`` levels the eye line.
    Pixels outside the image are mid-grey (:data:`BORDER_FILL`).
    """
    box = detection.box
    cx, cy = box.x + box.width / 2.0, box.y + box.height / 2.0
    crop_w, crop_h = box.width * (1.0 + margin), box.height * (1.0 + margin)
    theta = eye_angle(detection) if rotate else 0.0
    src = image
    # Area-downscale big faces first: a bilinear warp that shrinks by more than ~2x aliases.
    shrink = min(crop_w, crop_h) / size
    if shrink > 2.0:
        radius = 0.5 * math.hypot(crop_w, crop_h) + 2.0
        x0, y0 = max(int(cx - radius), 0), max(int(cy - radius), 0)
        x1, y1 = min(int(cx + radius) + 1, image.shape[1]), min(int(cy + radius) + 1, image.shape[0])
        region = image[y0:y1, x0:x1]
        factor = 1.0 / shrink * 1.5
        new_w, new_h = (
            max(round(region.shape[1] * factor), 1),
            max(round(region.shape[0] * factor), 1),
        )
        src = np.asarray(cv2.resize(region, (new_w, new_h), interpolation=cv2.INTER_AREA), dtype=np.uint8)
        sx, sy = new_w / region.shape[1], new_h / region.shape[0]
        cx, cy = (cx - x0) * sx, (cy - y0) * sy
        crop_w, crop_h = crop_w * sx, crop_h * sy
    # Inverse map: output pixel centre (u, v) -> source point, in OpenCV's pixel-centre convention.
    cos_t, sin_t = math.cos(theta), math.sin(theta)
    ax, ay = crop_w / size, crop_h / size
    matrix = np.array(
        [
            [cos_t * ax, -sin_t * ay, 0.0],
            [sin_t * ax, cos_t * ay, 0.0],
        ],
        dtype=np.float64,
    )
    # Source of output pixel (u, v): centre + R @ ((u + 0.5) * a - crop/2), then back to pixel-centre coordinates.
    du, dv = 0.5 * ax - crop_w / 2.0, 0.5 * ay - crop_h / 2.0
    matrix[0, 2] = cx + cos_t * du - sin_t * dv - 0.5
    matrix[1, 2] = cy + sin_t * du + cos_t * dv - 0.5
    out = cv2.warpAffine(
        np.ascontiguousarray(src),
        matrix,
        (size, size),
        flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=BORDER_FILL,
    )
    return np.ascontiguousarray(out, dtype=np.uint8)


MIN_ALIGNED_SIDE = 20
"""Smallest shorter side, pixels, of a crop given as already aligned (:func:`resize_aligned`)."""

MAX_ALIGNED_ASPECT = 2.0
"""Largest ratio of the longer to the shorter side of a crop given as already aligned."""


def resize_aligned(image: npt.NDArray[np.uint8], *, size: int = CROP_SIZE) -> npt.NDArray[np.uint8]:
    """A face crop that is already aligned (what :func:`align_face` cuts out: the box plus margin, eye line
    level, any size) resized to ``size`` x ``size`` RGB uint8, as the pipeline's own crops are: area
    interpolation when shrinking, bilinear when enlarging, aspect ratio not kept (the pipeline stretches a
    non-square box the same way). A crop already ``size`` x ``size`` is returned as is (contiguous).

    Raises ``ValueError`` for a crop under :data:`MIN_ALIGNED_SIDE` px or more elongated than
    :data:`MAX_ALIGNED_ASPECT`.
    """
    h, w = image.shape[:2]
    if min(h, w) < MIN_ALIGNED_SIDE:
        raise ValueError(f"an aligned face crop must be at least {MIN_ALIGNED_SIDE} px on each side; got {w}x{h}")
    if max(h, w) > MAX_ALIGNED_ASPECT * min(h, w):
        raise ValueError(
            f"an aligned face crop must be roughly square (sides within {MAX_ALIGNED_ASPECT:g}x); got {w}x{h}"
        )
    if (h, w) == (size, size):
        return np.ascontiguousarray(image, dtype=np.uint8)
    shrink = h > size or w > size
    out = cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    return np.ascontiguousarray(out, dtype=np.uint8)


def prewhiten(crops: npt.NDArray[np.uint8] | npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """Per-image standardisation: ``(x - mean) / max(std, 1/sqrt(n))`` over each image's pixels and channels.

    Accepts (H, W, 3) or (N, H, W, 3); returns float32 of the same shape. This is the input normalisation the
    FaceNet weights were trained with; serving and training both call it.
    """
    x = np.asarray(crops, dtype=np.float32)
    single = x.ndim == 3
    if single:
        x = x[None]
    axes = (1, 2, 3)
    mean = x.mean(axis=axes, keepdims=True)
    std = x.std(axis=axes, keepdims=True)
    n = float(np.prod(x.shape[1:]))
    std_adj = np.maximum(std, 1.0 / math.sqrt(n))
    out = ((x - mean) / std_adj).astype(np.float32)
    return out[0] if single else out
