"""Head pose from the five landmarks: the geometry on synthetic projections, then real side-view photos."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from embeddings import FaceAnalyzer
from embeddings.analyzer import AnalyzerConfig
from embeddings.errors import BadPose, LowQuality
from embeddings.pose import HeadPose, estimate_pose, project
from embeddings.quality import POSE, QualityThresholds
from embeddings.types import Box, Landmarks
from tests.conftest import image_files

SIDE_VIEWS = {
    # real photos of the 5-celebrity set in which the head is turned well away from the camera
    "elton_john/httpsdfrpwlycscloudfrontnetdeltonjohnjpg.jpg": 1,  # nose towards the image's right
    "ben_afflek/httpssmediacacheakpinimgcomxedaedabcbefbcbabbjpg.jpg": -1,  # towards the image's left
}


def _box_around(lm: Landmarks) -> Box:
    pts = lm.as_array()
    (x0, y0), (x1, _) = pts.min(axis=0), pts.max(axis=0)
    w = float(x1 - x0)
    return Box(float(x0) - 0.3 * w, float(y0) - 0.6 * w, 1.6 * w, 2.0 * w)


@pytest.mark.parametrize(
    "truth",
    [(0, 0, 0), (20, 0, 0), (-40, 0, 0), (0, 15, 0), (0, -15, 0), (0, 0, 25), (30, 10, -10), (-60, -5, 5)],
)
def test_pose_of_a_projected_model_face(truth: tuple[float, float, float]) -> None:
    lm = project(HeadPose(*truth))
    pose = estimate_pose(lm, _box_around(lm))
    assert pose is not None
    # the projection's camera differs from the one the estimate assumes: a few degrees apart, signs right
    assert pose.yaw == pytest.approx(truth[0], abs=4.0)
    assert pose.pitch == pytest.approx(truth[1], abs=4.0)
    assert pose.roll == pytest.approx(truth[2], abs=4.0)


def test_pose_of_unusable_landmarks_is_none() -> None:
    nan = (float("nan"), float("nan"))
    assert estimate_pose(Landmarks(nan, nan, nan, nan, nan), Box(0, 0, 10, 10)) is None
    same = (5.0, 5.0)
    assert estimate_pose(Landmarks(same, same, same, same, same), Box(0, 0, 10, 10)) is None


@pytest.mark.parametrize("angle", [-30.0, 14.0, 40.0])
def test_roll_follows_the_eye_line(angle: float) -> None:
    # a frontal face turned in the image plane; image y points down, so a positive angle is clockwise
    pts = project(HeadPose(0, 0, 0)).as_array().astype(np.float64)
    t = np.radians(angle)
    rot = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    turned = pts @ rot.T
    lm = Landmarks(*(tuple(map(float, p)) for p in turned))  # type: ignore[arg-type]
    pose = estimate_pose(lm, _box_around(lm))
    assert pose is not None and pose.roll == pytest.approx(angle, abs=2.0)
    assert abs(pose.yaw) < 4.0 and abs(pose.pitch) < 4.0
    assert (turned[1][1] > turned[0][1]) == (angle > 0)  # positive roll: the image-right eye is lower


@pytest.mark.slow
def test_real_side_views_are_rejected_with_reason_pose(analyzer: FaceAnalyzer, celebrity_root: Path) -> None:
    for name, sign in SIDE_VIEWS.items():
        data = (celebrity_root / "train" / name).read_bytes()
        with pytest.raises(BadPose) as info:
            analyzer.single_face(data, check_quality=True)
        assert info.value.code == "pose" and POSE in info.value.reasons
        assert isinstance(info.value, LowQuality)  # a kind of quality rejection
        face = analyzer.single_face(data, check_quality=False)
        assert face.quality.yaw is not None and sign * face.quality.yaw > 45.0, (name, face.quality)


@pytest.mark.slow
def test_no_yaw_limit_enrols_the_side_view(weights_path: Path, celebrity_root: Path) -> None:
    loose = FaceAnalyzer(AnalyzerConfig(quality=QualityThresholds(max_yaw=None)), weights_path=weights_path)
    for name in SIDE_VIEWS:
        face = loose.single_face((celebrity_root / "train" / name).read_bytes(), check_quality=True)
        assert POSE not in face.quality.reasons


@pytest.mark.slow
def test_frontal_photos_pass_and_read_as_frontal(analyzer: FaceAnalyzer, celebrity_root: Path) -> None:
    yaws = []
    for person in sorted((celebrity_root / "val").iterdir()):
        for f in image_files(person):
            faces = analyzer.analyze(f.read_bytes())
            if faces:
                assert faces[0].quality.yaw is not None
                yaws.append(abs(faces[0].quality.yaw))
    assert len(yaws) >= 20
    # the val photos are mostly portraits: the median turn is small and few exceed the enrolment limit
    assert float(np.median(yaws)) < 20.0
    assert sum(y > 45.0 for y in yaws) <= 2
