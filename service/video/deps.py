"""What a frame's analysis needs, shared by video jobs and live streams (one object, built by ``Media``)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from embeddings import FaceAnalyzer
from service.events.recorder import EventRecorder
from service.video.pipeline import PipelineConfig


@dataclass(frozen=True)
class FrameDeps:
    """``analyzer``/``gallery`` return the app's current ones (``analyzer`` is None while the model loads);
    ``config`` the tracking settings; ``recorder`` stores decided events; a frame is analysed only while
    holding a ``gate`` permit (the CPU budget shared by every job and stream)."""

    analyzer: Callable[[], FaceAnalyzer | None]
    gallery: Callable[[], Any]
    config: Callable[[], PipelineConfig]
    recorder: EventRecorder
    gate: threading.Semaphore
