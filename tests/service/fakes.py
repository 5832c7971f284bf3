"""Fakes for fast tests of the service layers without a model: an analyzer whose detection does what a test
says, one whose faces carry chosen embeddings, and an app with a loopback client."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
from fastapi.testclient import TestClient

from service.app import create_app
from service.config import Settings


class FakeDetector:
    def __init__(self, behaviour: Callable[[], list[Any]]) -> None:
        self.behaviour = behaviour

    def detect(self, image: Any) -> list[Any]:
        return self.behaviour()


class FakeAnalyzer:
    """Only what /v1/detect needs; ``behaviour`` decides what detection does (return, sleep or raise)."""

    model_id = "fake"
    threshold = 1.0

    def __init__(self, behaviour: Callable[[], list[Any]] = list) -> None:
        self.detector = FakeDetector(behaviour)

    def load_image(self, image: bytes) -> Any:
        return np.zeros((10, 20, 3), dtype=np.uint8)

    def detect(self, image: Any) -> list[Any]:
        return self.detector.detect(image)


def app_with(tmp_path: Path, analyzer_factory: Callable[[Settings], Any], **settings: Any) -> Any:
    return create_app(Settings(data=tmp_path / "data", **settings), analyzer_factory=analyzer_factory)


LOCAL_URL = "http://127.0.0.1:8000"


def local(app: Any, **kwargs: Any) -> TestClient:
    """A client whose connection is loopback at both ends (server socket and peer), like a local browser."""
    return TestClient(app, base_url=LOCAL_URL, client=("127.0.0.1", 50000), **kwargs)


class FakeFace:
    """What enrol, verify and identify read of a face."""

    def __init__(self, embedding: Any) -> None:
        self.embedding = np.asarray(embedding, np.float32)
        self.box = SimpleNamespace(to_dict=lambda: {"x": 0.0, "y": 0.0, "width": 100.0, "height": 100.0})
        self.quality = SimpleNamespace(
            face_size=100.0, confidence=0.99, sharpness=50.0, yaw=None, pitch=None, roll=None
        )
        self.crop = np.full((160, 160, 3), 128, np.uint8)


def unit(i: int) -> Any:
    v = np.zeros(128, np.float32)
    v[i] = 1.0
    return v


class EmbeddingAnalyzer:
    """``single_face`` returns the embedding ``unit(first byte)``; ``on_analyse`` runs before it returns."""

    model_id = "fake"
    threshold = 1.0

    def __init__(self, on_analyse: Callable[[], object] = lambda: None) -> None:
        self.on_analyse = on_analyse
        self.calls = 0

    def single_face(self, data: bytes, *, largest: bool = False, check_quality: bool = True) -> FakeFace:
        self.calls += 1
        self.on_analyse()
        return FakeFace(unit(data[0]))
