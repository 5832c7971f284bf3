"""Video jobs, live streams, events and webhooks of one server, started and stopped by the app's lifespan. Their
stores are the backend's :class:`~service.stores.MediaStores` (shared by replicas of a database), else SQLite files
in the data dir.

All of them share one CPU gate (``FACEREC_VIDEO_WORKERS`` permits): a frame is analysed only while holding a
permit, so however many streams and jobs run, at most that many frames compete with REST requests for the
detector and the encoder.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import Depends, Request

from embeddings import FaceAnalyzer, FaceDetector
from service.config import Settings
from service.events.recorder import EventRecorder
from service.events.store import EventStore, SQLiteEventStore
from service.events.webhooks import WebhookSender
from service.gallery.errors import log_background_failure
from service.metrics import Metrics
from service.stores import MediaStores
from service.streams.manager import StreamManager
from service.streams.metrics import StreamCollector
from service.streams.store import SQLiteStreamStore
from service.video.deps import FrameDeps
from service.video.jobs import JobRunner
from service.video.jobstore import JobStore, SQLiteJobStore
from service.video.live import LiveSessions
from service.video.pipeline import PipelineConfig

log = logging.getLogger("facerec.media")

PURGE_EVERY_S = 600.0
FILE_DECIDE_FRAMES = 1 << 30
"""Video files have no latency to keep: their tracks are decided when they end, on their best views overall."""


LIVE_VIEWS, FILE_VIEWS = 3, 5
"""Views embedded per track: fewer on live streams, where the encoder's time is the event's latency."""
LIVE_FULL_DETECT_S = 0.25
"""Live streams search the whole frame for faces at least this often (s); frames between are searched only
around the tracked faces (:func:`service.video.regions.detect_near`). Video files search every frame whole."""


def video_detector(settings: Settings, analyzer: FaceAnalyzer) -> FaceDetector:
    """The detector of video frames: the analyzer's settings, but faces under ``FACEREC_VIDEO_MIN_FACE_PX``
    (source pixels) are not looked for, which makes MTCNN's image pyramid (most of its cost) several times
    smaller on camera frames."""
    cfg = analyzer.config
    return FaceDetector(
        min_confidence=cfg.min_detection_confidence,
        min_face_size=max(settings.video_min_face_px, cfg.min_face_size),
        max_side=cfg.detect_max_side,
    )


def pipeline_config(
    settings: Settings, analyzer: FaceAnalyzer | None, *, live: bool, detector: FaceDetector | None = None
) -> PipelineConfig:
    """Tracking and decision settings: identify's thresholds (the analyzer's fixed one and ``FACEREC_MAX_FIR``)."""
    fixed = float(analyzer.threshold) if analyzer is not None else settings.match_threshold
    return PipelineConfig(
        fixed_threshold=fixed,
        max_fir=settings.max_fir,
        decide_frames=settings.track_decide_frames if live else FILE_DECIDE_FRAMES,
        max_age_s=settings.track_max_age_s,
        keep_best=LIVE_VIEWS if live else FILE_VIEWS,
        detector=detector,
        full_detect_s=LIVE_FULL_DETECT_S if live else 0.0,
    )


class Media:
    """See the module docstring. ``analyzer``/``gallery`` return the app's current ones (None while loading)."""

    def __init__(
        self,
        settings: Settings,
        *,
        analyzer: Callable[[], FaceAnalyzer | None],
        gallery: Callable[[], Any],
        metrics: Metrics | None = None,
        stores: MediaStores | None = None,
    ) -> None:
        self.settings = settings
        self._analyzer = analyzer
        self._detector: FaceDetector | None = None
        self._detector_lock = threading.Lock()
        data = settings.data
        self.events: EventStore = stores.events if stores else SQLiteEventStore(data)
        self.sender = (
            WebhookSender(
                self.events,
                url=settings.webhook_url,
                secret=settings.webhook_secret,
                timeout_s=settings.webhook_timeout_s,
                max_s=settings.webhook_max_backoff_s,
            )
            if settings.webhook_url
            else None
        )
        self.recorder = EventRecorder(
            self.events, webhooks=self.sender is not None, wake=self.sender.wake if self.sender else None
        )
        self.gate = threading.BoundedSemaphore(settings.video_workers)
        self.jobs: JobStore = stores.jobs if stores else SQLiteJobStore(data)

        def deps(*, live: bool) -> FrameDeps:
            def config() -> PipelineConfig:
                return pipeline_config(settings, analyzer(), live=live, detector=self.detector())

            return FrameDeps(analyzer, gallery, config, self.recorder, self.gate)

        self.runner = JobRunner(
            self.jobs,
            deps(live=False),
            keep_uploads=settings.video_keep_uploads,
            default_fps=settings.video_fps,
            max_pixels=settings.max_pixels,
        )
        self.streams = StreamManager(
            stores.streams if stores else SQLiteStreamStore(data),
            deps(live=True),
            max_streams=settings.streams_max,
            max_backoff_s=settings.stream_max_backoff_s,
        )
        self.live = LiveSessions()
        if metrics is not None:
            metrics.registry.register(StreamCollector(self.streams))
        self._stop = threading.Event()
        self._purger = threading.Thread(target=self._purge_loop, name="facerec-events-retention", daemon=True)

    def detector(self) -> FaceDetector | None:
        """The shared :func:`video_detector`, made on first use once the model is loaded (None before)."""
        with self._detector_lock:
            analyzer = self._analyzer()
            if self._detector is None and analyzer is not None:
                self._detector = video_detector(self.settings, analyzer)
            return self._detector

    def start(self) -> Media:
        self.runner.start()
        self.streams.start()
        if self.sender is not None:
            self.sender.start()
        self._purger.start()
        return self

    def _purge_loop(self) -> None:
        days = self.settings.events_retention_days
        while days > 0 and not self._stop.is_set():
            try:
                n = self.events.purge(time.time() - days * 86400.0)
                if n:
                    log.info("erased %d events older than %g days", n, days)
            except Exception as e:
                log_background_failure(log, "event retention purge", e)
            self._stop.wait(PURGE_EVERY_S)

    def close(self) -> None:
        """Stop streams, jobs (a running job is re-queued at the next start) and webhooks; close the stores."""
        self._stop.set()
        self.streams.close()
        self.runner.close()
        if self.sender is not None:
            self.sender.close()
        self._purger.join(5.0)
        self.streams.store.close()
        self.jobs.close()
        self.events.close()


async def get_media(request: Request) -> Media:
    media: Media = request.app.state.media
    return media


MediaDep = Annotated[Media, Depends(get_media)]
