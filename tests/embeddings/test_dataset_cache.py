"""The detection cache of embeddings.dataset: misses are retried once per padded-retry border, not per run."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt

from embeddings.dataset import PADDED_RETRY_KEY, RETRY_PREFIX, detect_primary_faces, read_detection_cache
from embeddings.types import Detection


class NoFaces:
    """A detector that never finds a face and counts the images it is shown."""

    def __init__(self) -> None:
        self.calls = 0

    def detect(self, image: npt.NDArray[np.uint8]) -> list[Detection]:
        self.calls += 1
        return []

    def detect_batch(self, images: list[npt.NDArray[np.uint8]]) -> list[list[Detection]]:
        return [self.detect(i) for i in images]


def _folder(tmp_path: Path) -> list[str]:
    rng = np.random.default_rng(0)
    (tmp_path / "a").mkdir()
    cv2.imwrite(str(tmp_path / "a" / "a_0001.png"), rng.integers(0, 256, (40, 40, 3), dtype=np.uint8))
    return ["a/a_0001.png"]


def test_a_miss_is_retried_once_and_again_after_the_border_changes(tmp_path: Path) -> None:
    paths = _folder(tmp_path)
    cache = tmp_path / "detections.json"
    detector = NoFaces()
    assert detect_primary_faces(tmp_path, paths, detector=detector, cache_file=cache) == {paths[0]: None}  # type: ignore[arg-type]
    assert detector.calls == 2  # the image, then its padded copy
    assert json.loads(cache.read_text())[PADDED_RETRY_KEY] == paths
    detect_primary_faces(tmp_path, paths, detector=detector, cache_file=cache)  # type: ignore[arg-type]
    assert detector.calls == 2  # cached, retry included
    # a cache written with another border (or before the retry existed): its misses are tried again
    raw = json.loads(cache.read_text())
    raw[RETRY_PREFIX] = raw.pop(PADDED_RETRY_KEY)
    cache.write_text(json.dumps(raw))
    cached, retried = read_detection_cache(cache)
    assert cached == {paths[0]: None} and retried == set()
    detect_primary_faces(tmp_path, paths, detector=detector, cache_file=cache)  # type: ignore[arg-type]
    assert detector.calls == 4
    assert RETRY_PREFIX not in json.loads(cache.read_text())
