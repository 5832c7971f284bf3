"""Tracking sessions for the web page's live webcam mode: each browser tab sends frames one after another
under a session id and gets back the tracked faces (boxes, and names once decided) of each frame.

A session holds one :class:`TrackPipeline`; its frames are processed one at a time, in order. Sessions are
kept in memory (nothing is stored; no events are recorded), at most ``max_sessions``, and dropped after
``idle_s`` seconds without a frame.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from service.video.pipeline import FrameResult, TrackPipeline


@dataclass
class _Session:
    pipeline: TrackPipeline
    started: float = field(default_factory=time.monotonic)
    last_used: float = field(default_factory=time.monotonic)
    lock: threading.Lock = field(default_factory=threading.Lock)


class LiveSessions:
    """Sessions by ``(caller, session id)``; thread-safe."""

    def __init__(self, *, max_sessions: int = 16, idle_s: float = 60.0) -> None:
        self.max_sessions, self.idle_s = max_sessions, idle_s
        self._sessions: dict[tuple[str, str], _Session] = {}
        self._lock = threading.Lock()

    def process(
        self, key: tuple[str, str], rgb: npt.NDArray[np.uint8], new_pipeline: Callable[[], TrackPipeline]
    ) -> FrameResult:
        """Track one frame of session ``key`` (created on first use; the oldest idle one is dropped when full).
        The frame's time is the session's clock (s since its first frame)."""
        now = time.monotonic()
        with self._lock:
            for k in [k for k, s in self._sessions.items() if now - s.last_used > self.idle_s]:
                del self._sessions[k]
            session = self._sessions.get(key)
            if session is None:
                if len(self._sessions) >= self.max_sessions:
                    oldest = min(self._sessions, key=lambda k: self._sessions[k].last_used)
                    del self._sessions[oldest]
                session = self._sessions[key] = _Session(new_pipeline())
            session.last_used = now
        with session.lock:
            return session.pipeline.process(rgb, time.monotonic() - session.started)

    def __len__(self) -> int:
        with self._lock:
            return len(self._sessions)
