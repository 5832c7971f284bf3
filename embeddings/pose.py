"""Head pose (yaw, pitch, roll in degrees) from the five MTCNN landmarks.

The landmarks are fitted to a generic 3-D face (:data:`FACE_MODEL`, millimetres) with a perspective camera of
focal length = the face box diagonal x :data:`FOCAL_PER_BOX` (a face seen from a few face-widths away; the
angles hardly depend on it), solved with OpenCV's SQPnP, and the rotation is read as intrinsic yaw-pitch-roll.

Conventions (degrees, 0 = frontal, looking at the camera):

* ``yaw``: turn left/right; positive when the nose points to the *image's* right (the person turned to their
  own left). A profile is +-90.
* ``pitch``: nod; positive when the nose points up (chin raised).
* ``roll``: in-plane tilt; positive when the head leans clockwise in the image (the image-right eye lower).

Accuracy limits: five points and an average face, so the angles are estimates. The nose tip is the only depth
cue, so yaw and pitch are scaled by how far one person's nose stands out from the average (+-20% of the
angle), and pitch also by the face's proportions (a long face reads as looking down). Roll is exact up to
landmark noise. MTCNN's landmarks degrade past ~45 degrees of yaw and the detector rarely finds faces past
~70 degrees, so estimates beyond ~60 degrees are compressed (a true profile typically reads 50-75). Use them to
tell frontal from turned faces, not as a measurement.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

from embeddings.types import Box, Landmarks

FACE_MODEL = np.array(
    [
        (-31.5, 38.0, -28.0),  # image-left eye (the person's right eye)
        (31.5, 38.0, -28.0),  # image-right eye
        (0.0, 0.0, 0.0),  # nose tip
        (-25.0, -30.0, -24.0),  # image-left mouth corner
        (25.0, -30.0, -24.0),  # image-right mouth corner
    ],
    dtype=np.float64,
)
"""A generic face, mm: x to the image's right, y up, z towards the camera; origin at the nose tip. Pupils 63 mm
apart and 38 mm above the nose tip, mouth corners 50 mm apart and 30 mm below it, the nose standing out 24-28
mm (adult averages)."""

FOCAL_PER_BOX = 3.0
"""Focal length of the assumed camera in units of the face box diagonal."""


@dataclass(frozen=True, slots=True)
class HeadPose:
    """Yaw, pitch and roll in degrees (conventions in the module docstring)."""

    yaw: float
    pitch: float
    roll: float

    def to_dict(self) -> dict[str, float]:
        return {"yaw": self.yaw, "pitch": self.pitch, "roll": self.roll}


def _euler(rotation: npt.NDArray[np.float64]) -> tuple[float, float, float]:
    """Intrinsic yaw (about y), pitch (about x), roll (about z) of a model->camera rotation, in our signs.

    The camera looks along +z with y down; the model has y up and z towards the camera. ``m`` maps model axes
    to a frame with x right, y up, z towards the viewer."""
    flip = np.diag([1.0, -1.0, -1.0])  # camera (x right, y down, z away) -> viewer (x right, y up, z towards)
    m = flip @ rotation
    # m = Ry(yaw) @ Rx(pitch) @ Rz(roll), with Ry positive turning +z (the nose) towards +x (image right)
    pitch = math.asin(max(-1.0, min(1.0, -m[1, 2])))
    yaw = math.atan2(m[0, 2], m[2, 2])
    roll = math.atan2(m[1, 0], m[1, 1])
    # our pitch is positive for the nose pointing up (+y): Rx(p) turns +z towards -y for p > 0, so negate;
    # our roll is positive clockwise in the image (y down): Rz(r) is counter-clockwise in y-up axes, so negate
    return math.degrees(yaw), -math.degrees(pitch), -math.degrees(roll)


def estimate_pose(landmarks: Landmarks, box: Box) -> HeadPose | None:
    """The head pose from a detection's landmarks (pixels) and box; None for unusable landmarks (NaN,
    coincident eyes)."""
    points = landmarks.as_array().astype(np.float64)
    if not np.isfinite(points).all() or np.linalg.norm(points[1] - points[0]) < 1.0:
        return None
    focal = FOCAL_PER_BOX * math.hypot(box.width, box.height)
    cx, cy = box.x + box.width / 2.0, box.y + box.height / 2.0
    camera = np.array([[focal, 0.0, cx], [0.0, focal, cy], [0.0, 0.0, 1.0]])
    # the camera's y points down, the model's up: flip the model's y and z so that the solver needs no mirror
    model = FACE_MODEL * np.array([1.0, -1.0, -1.0])
    ok, rvec, _ = cv2.solvePnP(model, points, camera, None, flags=cv2.SOLVEPNP_SQPNP)
    if not ok:
        return None
    rotation, _ = cv2.Rodrigues(rvec)
    flip = np.diag([1.0, -1.0, -1.0])
    yaw, pitch, roll = _euler(np.asarray(rotation @ flip, dtype=np.float64))
    return HeadPose(yaw=round(yaw, 1), pitch=round(pitch, 1), roll=round(roll, 1))


def project(pose: HeadPose, *, distance_mm: float = 600.0, focal: float = 1000.0) -> Landmarks:
    """The five landmarks of :data:`FACE_MODEL` seen in ``pose`` (pixels, principal point at the origin): the
    inverse of :func:`estimate_pose`, to check it."""
    y, p, r = (math.radians(v) for v in (pose.yaw, -pose.pitch, -pose.roll))
    ry = np.array([[math.cos(y), 0, math.sin(y)], [0, 1, 0], [-math.sin(y), 0, math.cos(y)]])
    rx = np.array([[1, 0, 0], [0, math.cos(p), -math.sin(p)], [0, math.sin(p), math.cos(p)]])
    rz = np.array([[math.cos(r), -math.sin(r), 0], [math.sin(r), math.cos(r), 0], [0, 0, 1]])
    viewer = (ry @ rx @ rz @ FACE_MODEL.T).T  # x right, y up, z towards the viewer
    depth = distance_mm - viewer[:, 2]
    u, v = focal * viewer[:, 0] / depth, -focal * viewer[:, 1] / depth
    pts = [(float(a), float(b)) for a, b in zip(u, v, strict=True)]
    return Landmarks(pts[0], pts[1], pts[2], pts[3], pts[4])
