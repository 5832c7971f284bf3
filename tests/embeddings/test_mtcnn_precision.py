"""The openvino detector with RNet and ONet at bf16 (``mixed``) finds the same faces as at f32 on every 5-celebrity
photo, with the same boxes and landmarks to within a few pixels. (PNet at bf16 too, ``bf16``, does not: it loses
a face of confidence 0.88 on one photo, so it is not offered as a default.)"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt
import pytest

from embeddings.detector import FaceDetector
from embeddings.types import Detection
from tests.conftest import image_files

pytestmark = pytest.mark.slow  # the real MTCNN networks

Image = npt.NDArray[np.uint8]


def read_rgb(path: Path) -> Image:
    bgr = cv2.imread(str(path))
    assert bgr is not None, path
    return np.ascontiguousarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))


@pytest.fixture(scope="module")
def photos(celebrity_root: Path) -> list[Image]:
    """Every photo of the set (train and val), RGB."""
    files = [
        f
        for part in ("train", "val")
        for person in sorted((celebrity_root / part).iterdir())
        for f in image_files(person)
    ]
    return [read_rgb(f) for f in files]


@pytest.fixture(scope="module")
def f32_faces(photos: list[Image]) -> list[list[Detection]]:
    detector = FaceDetector(backend="openvino", precision="f32")
    return [detector.detect(p) for p in photos]


def iou(a: Detection, b: Detection) -> float:
    ix = max(0.0, min(a.box.x2, b.box.x2) - max(a.box.x, b.box.x))
    iy = max(0.0, min(a.box.y2, b.box.y2) - max(a.box.y, b.box.y))
    inter = ix * iy
    return inter / (a.box.width * a.box.height + b.box.width * b.box.height - inter)


def test_mixed_precision_finds_the_f32_faces(photos: list[Image], f32_faces: list[list[Detection]]) -> None:
    detector = FaceDetector(backend="openvino", precision="mixed")
    assert sum(len(f) for f in f32_faces) >= len(photos)  # the set has a face in every photo
    worst_iou, worst_landmark = 1.0, 0.0
    for photo, expected in zip(photos, f32_faces, strict=True):
        found = detector.detect(photo)
        assert len(found) == len(expected)
        for a in expected:
            b = max(found, key=lambda d: iou(a, d))
            worst_iou = min(worst_iou, iou(a, b))
            side = max(a.box.width, a.box.height)
            pa, pb = a.landmarks.as_array(), b.landmarks.as_array()
            worst_landmark = max(worst_landmark, float(np.abs(pa - pb).max()) / side)
            assert abs(a.confidence - b.confidence) < 0.02
    print(f"mixed: worst IoU {worst_iou:.4f}, worst landmark error {worst_landmark:.4f} of the box side")
    assert worst_iou >= 0.95
    assert worst_landmark <= 0.04  # as the backends agree with the package (test_detector_compiled)
