"""Detect faces only where tracked faces are expected: a cheap detection between a live stream's full ones.

MTCNN's cost on a camera frame is its image pyramid over the whole frame. A face already tracked is searched for
in a square region around its predicted box instead (``context`` box sides wide), scaled so that the face is
about ``face_px`` pixels (never enlarged): the pyramid of such a region is a few small levels. Boxes and
landmarks are mapped back to frame pixels. Faces that enter the frame are found by the next full detection,
so a pipeline alternates the two (:class:`service.video.pipeline.TrackPipeline`, ``full_detect_s``).
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
import numpy.typing as npt

from embeddings import Box, Detection, FaceDetector, Landmarks

FACE_PX = 96.0
"""The side (px) a tracked face is scaled to in its region (faces smaller than this are kept as they are)."""
CONTEXT = 2.4
"""The region's side, in face sides (room for the face to move or grow between frames)."""
SAME_FACE_IOU = 0.5
"""Two regions' detections overlapping more than this are one face (the more confident is kept)."""


def region_of(box: Box, frame_size: tuple[int, int], context: float = CONTEXT) -> tuple[int, int, int, int]:
    """``(x0, y0, x1, y1)`` px: the square ``context`` times the box's longer side around its centre, clipped to
    the frame ``(width, height)``."""
    side = context * max(box.width, box.height)
    cx, cy = box.x + box.width / 2, box.y + box.height / 2
    x0, y0 = max(int(cx - side / 2), 0), max(int(cy - side / 2), 0)
    x1, y1 = min(int(cx + side / 2) + 1, frame_size[0]), min(int(cy + side / 2) + 1, frame_size[1])
    return x0, y0, x1, y1


def _mapped(d: Detection, x0: float, y0: float, scale: float) -> Detection:
    """A detection of a region scaled by ``scale`` whose top-left is ``(x0, y0)``, in frame pixels."""

    def point(p: tuple[float, float]) -> tuple[float, float]:
        return (x0 + p[0] / scale, y0 + p[1] / scale)

    b, m = d.box, d.landmarks
    box = Box(x0 + b.x / scale, y0 + b.y / scale, b.width / scale, b.height / scale)
    marks = Landmarks(point(m.left_eye), point(m.right_eye), point(m.nose), point(m.mouth_left), point(m.mouth_right))
    return Detection(box, marks, d.confidence)


def detect_near(
    detector: FaceDetector, rgb: npt.NDArray[np.uint8], boxes: Sequence[Box], *, face_px: float = FACE_PX
) -> list[Detection]:
    """Faces found in the regions around ``boxes`` (frame pixels) of the RGB frame, one detection per face,
    largest first. A face the detector's minimum size would not find in the frame is not found here either:
    regions are scaled so the expected face is ``face_px``, and the detector's own minimum applies there."""
    height, width = rgb.shape[:2]
    found: list[Detection] = []
    for box in boxes:
        x0, y0, x1, y1 = region_of(box, (width, height))
        if x1 - x0 < 12 or y1 - y0 < 12:
            continue
        scale = min(1.0, face_px / max(box.width, box.height, 1.0))
        region = rgb[y0:y1, x0:x1]
        if scale < 1.0:
            size = (max(round((x1 - x0) * scale), 1), max(round((y1 - y0) * scale), 1))
            region = np.asarray(cv2.resize(region, size, interpolation=cv2.INTER_AREA), dtype=np.uint8)
        else:
            region = np.ascontiguousarray(region)
        for d in detector.detect(region):
            m = _mapped(d, x0, y0, scale)
            if min(m.box.width, m.box.height) >= detector.min_face_size * 0.8:
                found.append(m)
    found.sort(key=lambda d: d.confidence, reverse=True)
    kept: list[Detection] = []
    for d in found:
        if all(d.box.iou(k.box) <= SAME_FACE_IOU for k in kept):
            kept.append(d)
    return sorted(kept, key=lambda d: d.box.area, reverse=True)
