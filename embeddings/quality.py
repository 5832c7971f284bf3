"""Face quality measures and the reason codes for faces below the configured minimums."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

from embeddings.pose import estimate_pose
from embeddings.types import Detection, Quality

FACE_TOO_SMALL = "face_too_small"
LOW_CONFIDENCE = "low_confidence"
BLURRY = "blurry"
POSE = "pose"

DEFAULT_MAX_YAW = 45.0
"""Largest |yaw|, degrees, of a face accepted for enrolment (docs/OPENSET.md, "Accuracy by pose")."""


@dataclass(frozen=True, slots=True)
class QualityThresholds:
    """Minimums a face must reach to be enrolled.

    ``min_face_size``: shorter box side in source pixels. ``min_confidence``: detector confidence in [0, 1].
    ``min_sharpness``: variance of the Laplacian of the 160x160 grey crop (0 disables the check).
    ``max_yaw``: largest |yaw| in degrees from the landmarks (:mod:`embeddings.pose`); 0 or None disables it.
    """

    min_face_size: float = 40.0
    min_confidence: float = 0.95
    min_sharpness: float = 20.0
    max_yaw: float | None = DEFAULT_MAX_YAW


def sharpness(crop: npt.NDArray[np.uint8]) -> float:
    """Variance of the Laplacian of the grey crop: higher is sharper (typically 20..2000 for real faces)."""
    gray = cv2.cvtColor(np.ascontiguousarray(crop), cv2.COLOR_RGB2GRAY)
    return float(cv2.Laplacian(gray, cv2.CV_64F).var())


def assess(detection: Detection, crop: npt.NDArray[np.uint8], thresholds: QualityThresholds) -> Quality:
    """Measure one face and list the reasons (codes above) it falls short of ``thresholds``."""
    size = float(min(detection.box.width, detection.box.height))
    sharp = sharpness(crop)
    reasons: list[str] = []
    if size < thresholds.min_face_size:
        reasons.append(FACE_TOO_SMALL)
    if detection.confidence < thresholds.min_confidence:
        reasons.append(LOW_CONFIDENCE)
    if thresholds.min_sharpness > 0 and sharp < thresholds.min_sharpness:
        reasons.append(BLURRY)
    pose = estimate_pose(detection.landmarks, detection.box)
    if pose is not None and thresholds.max_yaw and abs(pose.yaw) > thresholds.max_yaw:
        reasons.append(POSE)
    return Quality(
        face_size=size,
        confidence=detection.confidence,
        sharpness=sharp,
        reasons=tuple(reasons),
        yaw=pose.yaw if pose else None,
        pitch=pose.pitch if pose else None,
        roll=pose.roll if pose else None,
    )
