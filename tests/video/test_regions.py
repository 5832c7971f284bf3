"""Searching for faces only around tracked ones (:mod:`service.video.regions`), with the real MTCNN on a 720p
frame of the 5-celebrity people crossing a background."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from embeddings import Box, FaceDetector
from service.video.regions import detect_near, region_of
from tests.video.helpers import people_scene


@pytest.fixture(scope="module")
def detector() -> FaceDetector:
    return FaceDetector(min_face_size=40)


@pytest.fixture(scope="module")
def frame(dataset: Path) -> np.ndarray:
    scene = people_scene(dataset, width=1280, height=720)
    rgb = scene.render(1.8)[:, :, ::-1]  # one person mid-way (BGR -> RGB)
    return np.ascontiguousarray(rgb)


def test_region_is_a_square_around_the_box_clipped_to_the_frame() -> None:
    assert region_of(Box(100, 100, 50, 40), (1280, 720)) == (65, 60, 186, 181)
    assert region_of(Box(0, 700, 50, 50), (1280, 720)) == (0, 665, 86, 720)


def test_tracked_faces_are_found_again_near_their_boxes(detector: FaceDetector, frame: np.ndarray) -> None:
    full = detector.detect(frame)
    assert len(full) == 1
    for d in full:
        # the tracker's prediction is off by a fifth of the face: the face is still found, where it is
        guess = Box(d.box.x + d.box.width / 5, d.box.y - d.box.height / 5, d.box.width, d.box.height)
        near = detect_near(detector, frame, [guess])
        assert len(near) == 1
        assert near[0].box.iou(d.box) > 0.7
        eyes_near, eyes_full = near[0].landmarks.as_array()[:2], d.landmarks.as_array()[:2]
        assert float(np.abs(eyes_near - eyes_full).max()) < 0.08 * d.box.width
    twice = detect_near(detector, frame, [full[0].box, full[0].box])  # overlapping regions: found once
    assert len(twice) == 1


def test_regions_searched_together_map_back_to_their_places(detector: FaceDetector, frame: np.ndarray) -> None:
    (face,) = detector.detect(frame)
    empty = [Box(20 + 110 * i, 720 - 110, 100, 100) for i in range(5)]
    assert all(e.iou(face.box) == 0 for e in empty)
    for boxes in ([*empty, face.box], [face.box, *empty]):  # the face's region last or first in the mosaic
        near = detect_near(detector, frame, boxes)
        assert len(near) == 1
        assert near[0].box.iou(face.box) > 0.7


def test_nothing_is_found_where_there_is_no_face(detector: FaceDetector, frame: np.ndarray) -> None:
    full = detector.detect(frame)
    empty = Box(640 - 50, 720 - 110, 100, 100)
    assert all(empty.iou(d.box) == 0 for d in full)
    assert detect_near(detector, frame, [empty]) == []
