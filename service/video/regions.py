"""Detect faces only where tracked faces are expected: a cheap detection between a live stream's full ones.

MTCNN's cost on a camera frame is its image pyramid over the whole frame. A face already tracked is searched for
in a square region around its predicted box instead (``context`` box sides wide), scaled so that the face is
about ``face_px`` pixels (never enlarged): the pyramid of such a region is a few small levels. Boxes and
landmarks are mapped back to frame pixels. The regions of one frame are packed into one mosaic image, so that
one detector call serves every tracked face. Faces that enter the frame are found by the next full detection,
so a pipeline alternates the two (:class:`service.video.pipeline.TrackPipeline`, ``full_detect_s``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

from embeddings import Box, Detection, FaceDetector, Landmarks

FACE_PX = 64.0
"""The side (px) a tracked face is scaled to in its region (faces smaller than this are kept as they are)."""
CONTEXT = 2.4
"""The region's side, in face sides (room for the face to move or grow between frames)."""
SAME_FACE_IOU = 0.5
"""Two regions' detections overlapping more than this are one face (the more confident is kept)."""
GAP = 16
"""Black pixels between the regions packed in one mosaic."""


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


@dataclass(frozen=True, slots=True)
class _Tile:
    """One region placed in a mosaic: its frame origin (px), scale, and place ``(left, top)`` in the mosaic."""

    x0: int
    y0: int
    scale: float
    left: int
    top: int
    width: int
    height: int


def _tiles(
    rgb: npt.NDArray[np.uint8], boxes: Sequence[Box], face_px: float, max_side: int
) -> list[tuple[npt.NDArray[np.uint8], list[_Tile]]]:
    """The scaled regions of ``boxes`` packed in rows (``GAP`` px apart, black between) into mosaics of at most
    ``max_side`` px a side: one detector call finds the faces of many regions."""
    height, width = rgb.shape[:2]
    mosaics: list[tuple[list[npt.NDArray[np.uint8]], list[_Tile]]] = []
    x = y = row_h = 0
    for box in boxes:
        x0, y0, x1, y1 = region_of(box, (width, height))
        if x1 - x0 < 12 or y1 - y0 < 12:
            continue
        scale = min(1.0, face_px / max(box.width, box.height, 1.0))
        region = rgb[y0:y1, x0:x1]
        size = (min(max(round((x1 - x0) * scale), 1), max_side), min(max(round((y1 - y0) * scale), 1), max_side))
        if size != (x1 - x0, y1 - y0):
            region = np.asarray(cv2.resize(region, size, interpolation=cv2.INTER_AREA), dtype=np.uint8)
            scale = size[0] / (x1 - x0)
        if mosaics and x + size[0] > max_side:
            x, y, row_h = 0, y + row_h + GAP, 0
        if not mosaics or y + size[1] > max_side:
            mosaics.append(([], []))
            x = y = row_h = 0
        mosaics[-1][0].append(np.asarray(region, dtype=np.uint8))
        mosaics[-1][1].append(_Tile(x0, y0, scale, x, y, size[0], size[1]))
        x, row_h = x + size[0] + GAP, max(row_h, size[1])
    out = []
    for images, tiles in mosaics:
        canvas = np.zeros(
            (max(t.top + t.height for t in tiles), max(t.left + t.width for t in tiles), 3), dtype=np.uint8
        )
        for image, t in zip(images, tiles, strict=True):
            canvas[t.top : t.top + t.height, t.left : t.left + t.width] = image
        out.append((canvas, tiles))
    return out


def detect_near(
    detector: FaceDetector, rgb: npt.NDArray[np.uint8], boxes: Sequence[Box], *, face_px: float = FACE_PX
) -> list[Detection]:
    """Faces found in the regions around ``boxes`` (frame pixels) of the RGB frame, one detection per face,
    largest first. A face the detector's minimum size would not find in the frame is not found here either:
    regions are scaled so the expected face is ``face_px``, and the detector's own minimum applies there. The
    regions are searched together, packed in one image (a mosaic) of at most the detector's ``max_side``."""
    found: list[Detection] = []
    for canvas, tiles in _tiles(rgb, boxes, face_px, detector.max_side):
        for d in detector.detect(canvas):
            cx, cy = d.box.x + d.box.width / 2, d.box.y + d.box.height / 2
            tile = next((t for t in tiles if t.left <= cx < t.left + t.width and t.top <= cy < t.top + t.height), None)
            if tile is None:
                continue
            m = _mapped(d, tile.x0 - tile.left / tile.scale, tile.y0 - tile.top / tile.scale, tile.scale)
            if min(m.box.width, m.box.height) >= detector.min_face_size * 0.8:
                found.append(m)
    found.sort(key=lambda d: d.confidence, reverse=True)
    kept: list[Detection] = []
    for d in found:
        if all(d.box.iou(k.box) <= SAME_FACE_IOU for k in kept):
            kept.append(d)
    return sorted(kept, key=lambda d: d.box.area, reverse=True)
