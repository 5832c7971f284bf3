"""Find faces that fill the frame: detect again on a padded copy when the detector finds nothing.

MTCNN's proposal network needs some context around a face: a clear frontal face cropped so tightly that it
touches the image border (ID photos, selfies, crops made by a camera) is often missed. :func:`detect_with_padding`
runs the detector as usual and, only when it finds no face, once more on a copy with a uniform border of
``pad`` x the longer side on each side, plain mid-grey by default (:data:`FILLS`): no mirrored structure is
invented, and the face stands out from the border. On tight crops of LFW faces a grey border found more faces
than the image's mean colour, which on a crop that is all face is skin colour and blurs the face's outline
(docs/OPENSET.md). Boxes and landmarks found there are mapped back to source pixels and clipped to the
image; a detection lying mostly in the added border (less than :data:`MIN_INSIDE` of its box inside the
image) is dropped. This works with any detector with a ``detect(rgb) -> list[Detection]`` method.

Cost: an image with a face pays nothing; an image without one pays a second detection on a copy
``(1 + 2 * pad)**2`` times the area (1.69x at the default 0.15). When the detector has a ``max_side`` (it
detects large images on a downscaled copy anyway), the retry downscales first so that the padded copy fits
within it: a 16 MP face-free upload pays one area resize and a small detection, not a 27 MP padded copy. A
face that fills such a frame is hundreds of pixels wide, well above what the smaller copy can find.
"""

from __future__ import annotations

from typing import Protocol

import cv2
import numpy as np
import numpy.typing as npt

from embeddings.types import Box, Detection, Landmarks, Point

DEFAULT_PAD = 0.15
"""Border added on each side by the retry, as a fraction of the image's longer side."""

FILLS = ("mean", "grey")
"""Border fills: ``mean``, the image's mean colour; ``grey``, RGB (128, 128, 128), which MTCNN's input
normalisation ``(x - 127.5) / 128`` maps to ~0, what its RNet and ONet see beyond an image's edge."""
DEFAULT_FILL = "grey"
"""Chosen with :data:`DEFAULT_PAD` on tight crops of LFW people of one half (bench/tight_crops.py, docs/OPENSET.md)."""

MIN_INSIDE = 0.5
"""Smallest fraction of a retry detection's box area that must lie inside the original image."""


class Detects(Protocol):
    def detect(self, image: npt.NDArray[np.uint8]) -> list[Detection]: ...


def _fit(image: npt.NDArray[np.uint8], detector: Detects, pad: float) -> tuple[npt.NDArray[np.uint8], float]:
    """``image`` area-downscaled so that its padded copy fits the detector's ``max_side`` (if it has one)."""
    limit = getattr(detector, "max_side", None)
    longest = max(image.shape[:2]) * (1.0 + 2.0 * pad)
    if not isinstance(limit, int | float) or longest <= limit:
        return image, 1.0
    scale = float(limit) / longest
    size = (max(round(image.shape[1] * scale), 1), max(round(image.shape[0] * scale), 1))
    return np.asarray(cv2.resize(image, size, interpolation=cv2.INTER_AREA), dtype=np.uint8), scale


def pad_image(
    image: npt.NDArray[np.uint8], pad: float = DEFAULT_PAD, fill: str = DEFAULT_FILL
) -> tuple[npt.NDArray[np.uint8], int]:
    """``image`` with a border of ``round(pad * longer side)`` px on each side, filled as ``fill`` says
    (:data:`FILLS`); returns the copy and the border width (the offset of the source's top-left corner in the
    copy)."""
    if fill not in FILLS:
        raise ValueError(f"fill must be one of {', '.join(FILLS)}, not {fill!r}")
    border = max(round(pad * max(image.shape[:2])), 1)
    if fill == "grey":
        colour = [128.0] * image.shape[2]
    else:
        colour = [float(c) for c in image.reshape(-1, image.shape[2]).mean(axis=0)]
    padded = cv2.copyMakeBorder(
        np.ascontiguousarray(image), border, border, border, border, cv2.BORDER_CONSTANT, value=colour
    )
    return np.asarray(padded, dtype=np.uint8), border


def unpad_detection(d: Detection, border: int, width: int, height: int, scale: float = 1.0) -> Detection | None:
    """A detection on the padded copy (of the source resized by ``scale``) in source pixels, box and landmarks
    clipped to the ``width`` x ``height`` source; None when less than :data:`MIN_INSIDE` of its box lies inside."""
    x, y = (d.box.x - border) / scale, (d.box.y - border) / scale
    bw, bh = d.box.width / scale, d.box.height / scale
    x1, y1 = max(x, 0.0), max(y, 0.0)
    x2, y2 = min(x + bw, float(width)), min(y + bh, float(height))
    if x2 <= x1 or y2 <= y1 or (x2 - x1) * (y2 - y1) < MIN_INSIDE * bw * bh:
        return None

    def point(p: Point) -> Point:
        px, py = (p[0] - border) / scale, (p[1] - border) / scale
        return (min(max(px, 0.0), float(width)), min(max(py, 0.0), float(height)))

    lm = d.landmarks
    return Detection(
        box=Box(x1, y1, x2 - x1, y2 - y1),
        landmarks=Landmarks(
            point(lm.left_eye), point(lm.right_eye), point(lm.nose), point(lm.mouth_left), point(lm.mouth_right)
        ),
        confidence=d.confidence,
    )


def detect_with_padding(
    detector: Detects, image: npt.NDArray[np.uint8], *, pad: float = DEFAULT_PAD, fill: str = DEFAULT_FILL
) -> list[Detection]:
    """``detector.detect(image)``; if that finds nothing, the faces found on a padded copy (module docstring),
    in source pixels, largest first. ``pad`` 0 disables the retry."""
    found = detector.detect(image)
    if found or pad <= 0 or image.ndim != 3:
        return found
    return detect_padded(detector, image, pad=pad, fill=fill)


def detect_padded(
    detector: Detects, image: npt.NDArray[np.uint8], *, pad: float = DEFAULT_PAD, fill: str = DEFAULT_FILL
) -> list[Detection]:
    """The retry alone: the faces found on a padded copy of an RGB ``image`` (module docstring), in source
    pixels, largest first."""
    small, scale = _fit(image, detector, pad)
    padded, border = pad_image(small, pad, fill)
    height, width = image.shape[:2]
    mapped = (unpad_detection(d, border, width, height, scale) for d in detector.detect(padded))
    return sorted((d for d in mapped if d is not None), key=lambda d: d.box.area, reverse=True)
