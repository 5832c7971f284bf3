"""Searching for faces only around tracked ones (:mod:`service.video.regions`), with the real MTCNN on a 720p
frame of the 5-celebrity people crossing a background."""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest

from embeddings import Box, FaceAnalyzer, FaceDetector
from service.config import Settings
from service.media import pipeline_config, video_detector
from service.video.pipeline import TrackPipeline
from service.video.regions import detect_near, region_of
from tests.video.helpers import ENROLLED, STRANGER, people_scene


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


@pytest.mark.parametrize(("crossing_s", "fps"), [(3.0, 5.0), (1.5, 4.5), (1.5, 8.0)])
def test_the_live_pipeline_follows_each_person_at_a_few_frames_per_second(
    analyzer: FaceAnalyzer, dataset: Path, crossing_s: float, fps: float
) -> None:
    """A stream's pipeline (whole-frame search every 0.25 s, regions between) on the 640x360 crossing scene at a
    few frames/s; a face crossing in 1.5 s at 4.5 frames/s moves about twice its width between frames: every
    person crossing is one track of at least ``min_hits`` frames (a face seen once has no velocity yet, so its
    region alone would miss it on the next frame)."""
    settings = Settings()
    config = pipeline_config(settings, analyzer, live=True, detector=video_detector(settings, analyzer))
    pipe = TrackPipeline(analyzer, lambda: None, config, deferred=True)
    scene = people_scene(dataset, crossing_s=crossing_s)
    hits: dict[int, Counter[str]] = defaultdict(Counter)
    for k in range(int(scene.duration_s * fps)):
        t = k / fps
        result = pipe.process(np.ascontiguousarray(scene.render(t)[:, :, ::-1]), t)
        for face in result.faces:
            box = face.box
            hits[face.track_id][scene.actor_at(t, box.x + box.width / 2, box.y + box.height / 2) or "?"] += 1
    tracks = Counter(who.most_common(1)[0][0] for who in hits.values() if sum(who.values()) >= config.min_hits)
    assert pipe.region_detections > 0
    assert tracks == Counter({label: 1 for label in (*ENROLLED, STRANGER)}), dict(hits)
