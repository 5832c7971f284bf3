"""Find faces that fill the frame: detect again on a padded copy when the detector finds nothing.

MTCNN's proposal network needs some context around a face: a clear frontal face cropped so tightly that it
touches the image border (ID photos, selfies, crops made by a camera) is often missed. :func:`detect_with_padding`
runs the detector as usual and, only when it finds no face, once more on a copy with a uniform border of
``pad`` x the longer side on each side (filled with the image's mean colour, so that no edge or mirrored
structure is invented). Boxes and landmarks found there are mapped back to source pixels and clipped to the
image; a detection lying mostly in the added border (less than :data:`MIN_INSIDE` of its box inside the
image) is dropped. This works with any detector with a ``detect(rgb) -> list[Detection]`` method.

Cost: an image with a face pays nothing; an image without one pays a second detection on a copy
``(1 + 2 * pad)**2`` times the area (2.25x at the default 0.25), before any downscaling the detector does.
"""

from __future__ import annotations

from typing import Protocol

import cv2
import numpy as np
import numpy.typing as npt

from embeddings.types import Box, Detection, Landmarks, Point

DEFAULT_PAD = 0.25
"""Border added on each side by the retry, as a fraction of the image's longer side."""

MIN_INSIDE = 0.5
"""Smallest fraction of a retry detection's box area that must lie inside the original image."""


class Detects(Protocol):
    def detect(self, image: npt.NDArray[np.uint8]) -> list[Detection]: ...


def pad_image(image: npt.NDArray[np.uint8], pad: float = DEFAULT_PAD) -> tuple[npt.NDArray[np.uint8], int]:
    """``image`` with a border of ``round(pad * longer side)`` px on each side, filled with its mean colour;
    returns the copy and the border width (the offset of the source's top-left corner in the copy)."""
    border = max(round(pad * max(image.shape[:2])), 1)
    colour = [float(c) for c in image.reshape(-1, image.shape[2]).mean(axis=0)]
    padded = cv2.copyMakeBorder(
        np.ascontiguousarray(image), border, border, border, border, cv2.BORDER_CONSTANT, value=colour
    )
    return np.asarray(padded, dtype=np.uint8), border


def unpad_detection(d: Detection, border: int, width: int, height: int) -> Detection | None:
    """A detection on the padded copy in source pixels, box and landmarks clipped to the ``width`` x ``height``
    image; None when less than :data:`MIN_INSIDE` of its box lies inside the image."""
    x, y = d.box.x - border, d.box.y - border
    x1, y1 = max(x, 0.0), max(y, 0.0)
    x2, y2 = min(x + d.box.width, float(width)), min(y + d.box.height, float(height))
    if x2 <= x1 or y2 <= y1 or (x2 - x1) * (y2 - y1) < MIN_INSIDE * d.box.area:
        return None

    def point(p: Point) -> Point:
        return (min(max(p[0] - border, 0.0), float(width)), min(max(p[1] - border, 0.0), float(height)))

    lm = d.landmarks
    return Detection(
        box=Box(x1, y1, x2 - x1, y2 - y1),
        landmarks=Landmarks(
            point(lm.left_eye), point(lm.right_eye), point(lm.nose), point(lm.mouth_left), point(lm.mouth_right)
        ),
        confidence=d.confidence,
    )


def detect_with_padding(
    detector: Detects, image: npt.NDArray[np.uint8], *, pad: float = DEFAULT_PAD
) -> list[Detection]:
    """``detector.detect(image)``; if that finds nothing, the faces found on a padded copy (module docstring),
    in source pixels, largest first. ``pad`` 0 disables the retry."""
    found = detector.detect(image)
    if found or pad <= 0 or image.ndim != 3:
        return found
    padded, border = pad_image(image, pad)
    height, width = image.shape[:2]
    mapped = (unpad_detection(d, border, width, height) for d in detector.detect(padded))
    return sorted((d for d in mapped if d is not None), key=lambda d: d.box.area, reverse=True)
