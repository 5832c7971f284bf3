"""Value types shared by the pipeline.

Conventions used everywhere in facerec:

* Pixel coordinates are in the *upright* image (after EXIF orientation), origin top-left, x to the right,
  y downwards, in float pixels.
* A :class:`Box` is ``(x, y, width, height)``: top-left corner plus size.
* Embeddings are float32 vectors of length 128 with unit L2 norm; the distance between two embeddings is the
  L2 distance, in ``[0, 2]`` (0 = identical, 2 = opposite); cosine similarity is ``1 - d**2 / 2``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

Point = tuple[float, float]
"""An ``(x, y)`` point in pixels of the upright image."""

EMBEDDING_DIM = 128


@dataclass(frozen=True, slots=True)
class Box:
    """An axis-aligned face box in pixels: top-left ``(x, y)`` and ``width`` x ``height``."""

    x: float
    y: float
    width: float
    height: float

    @property
    def x2(self) -> float:
        """Right edge (exclusive), pixels."""
        return self.x + self.width

    @property
    def y2(self) -> float:
        """Bottom edge (exclusive), pixels."""
        return self.y + self.height

    @property
    def area(self) -> float:
        return max(self.width, 0.0) * max(self.height, 0.0)

    def iou(self, other: Box) -> float:
        """Intersection over union with ``other``, in ``[0, 1]``."""
        ix = max(0.0, min(self.x2, other.x2) - max(self.x, other.x))
        iy = max(0.0, min(self.y2, other.y2) - max(self.y, other.y))
        inter = ix * iy
        union = self.area + other.area - inter
        return inter / union if union > 0 else 0.0

    def to_dict(self) -> dict[str, float]:
        return {"x": self.x, "y": self.y, "width": self.width, "height": self.height}


@dataclass(frozen=True, slots=True)
class Landmarks:
    """The five MTCNN landmarks, each ``(x, y)`` in pixels.

    ``left_eye`` is the eye on the *image's* left (the subject's right eye), as MTCNN reports it.
    """

    left_eye: Point
    right_eye: Point
    nose: Point
    mouth_left: Point
    mouth_right: Point

    def as_array(self) -> npt.NDArray[np.float32]:
        """Shape (5, 2) float32 in the order left_eye, right_eye, nose, mouth_left, mouth_right."""
        return np.array([self.left_eye, self.right_eye, self.nose, self.mouth_left, self.mouth_right], dtype=np.float32)

    def to_dict(self) -> dict[str, list[float]]:
        return {
            "left_eye": list(self.left_eye),
            "right_eye": list(self.right_eye),
            "nose": list(self.nose),
            "mouth_left": list(self.mouth_left),
            "mouth_right": list(self.mouth_right),
        }


@dataclass(frozen=True, slots=True)
class Detection:
    """One detected face: its box, landmarks and the detector's confidence in ``[0, 1]``."""

    box: Box
    landmarks: Landmarks
    confidence: float


@dataclass(frozen=True, slots=True)
class Quality:
    """Quality measurements of one face and the reasons it falls below the configured minimums.

    ``face_size`` is the shorter side of the box in source pixels; ``sharpness`` is the variance of the
    Laplacian of the aligned 160x160 grey crop (higher = sharper); ``reasons`` is empty when the face passes.
    """

    face_size: float
    confidence: float
    sharpness: float
    reasons: tuple[str, ...] = ()
    yaw: float | None = None
    """Head pose in degrees (:mod:`embeddings.pose`: yaw > 0 nose to the image's right, pitch > 0 nose up, roll >
    0 clockwise); None when the landmarks are unknown (an aligned input)."""
    pitch: float | None = None
    roll: float | None = None

    @property
    def ok(self) -> bool:
        return not self.reasons


@dataclass(frozen=True, slots=True)
class Face:
    """A detected, aligned and encoded face.

    ``embedding`` is float32 (128,) with unit L2 norm; ``crop`` is the aligned 160x160x3 RGB uint8 face that
    was encoded. ``aligned_input``: the image was given as an already aligned face crop and no detector ran;
    then ``detection.box`` is the whole image, and its landmarks and confidence (also ``quality.confidence``)
    are NaN (unknown).
    """

    detection: Detection
    quality: Quality
    embedding: npt.NDArray[np.float32] = field(repr=False)
    crop: npt.NDArray[np.uint8] = field(repr=False)
    aligned_input: bool = False

    @property
    def box(self) -> Box:
        return self.detection.box
