"""Prometheus metrics: requests by route and status, latency, faces detected, inference time, gallery size,
and the micro-batcher's batch sizes and queue depth.

Each app has its own registry, so several apps (tests) can live in one process.
"""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from starlette.types import ASGIApp, Message, Receive, Scope, Send

disable_created_metrics()  # no *_created series: they double the output and nobody graphs them

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)


class Metrics:
    """The service's collectors."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "facerec_http_requests",
            "HTTP requests by route template and status.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "facerec_http_request_duration_seconds",
            "HTTP request latency, seconds.",
            ["method", "route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.faces = Counter(
            "facerec_faces_detected", "Faces detected, by endpoint.", ["endpoint"], registry=self.registry
        )
        self.inference = Histogram(
            "facerec_inference_seconds",
            "Model work (decode, detect, align, encode, search) per request, seconds.",
            ["operation"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.batch_faces = Histogram(
            "facerec_encoder_batch_faces",
            "Faces per encoder call made by the micro-batcher.",
            buckets=BATCH_BUCKETS,
            registry=self.registry,
        )
        self.batch_requests = Histogram(
            "facerec_encoder_batch_requests",
            "Requests sharing one encoder call of the micro-batcher.",
            buckets=BATCH_BUCKETS,
            registry=self.registry,
        )
        self.batch_queue = Gauge(
            "facerec_encoder_queue_faces", "Faces waiting for the micro-batcher's encoder.", registry=self.registry
        )
        self.detector_calls = Gauge(
            "facerec_detector_network_calls",
            "MTCNN network calls run since start (calls shared by concurrent detections count once).",
            registry=self.registry,
        )
        self.detector_jobs = Gauge(
            "facerec_detector_network_jobs",
            "MTCNN network calls asked for by detections since start (jobs / calls = sharing).",
            registry=self.registry,
        )
        self.detector_queue = Gauge(
            "facerec_detector_queue_calls", "MTCNN network calls waiting for the detector.", registry=self.registry
        )
        self.decode_pixels = Gauge(
            "facerec_decode_pixels_held",
            "Decoded pixels held by requests now (FACEREC_DECODE_BUDGET_MP).",
            registry=self.registry,
        )
        self.decode_waiting = Gauge(
            "facerec_decode_waiting_requests",
            "Requests waiting for room in the decode budget now.",
            registry=self.registry,
        )
        self.decode_waits = Gauge(
            "facerec_decode_waits",
            "Decodes that waited for room in the decode budget since start.",
            registry=self.registry,
        )
        self.subjects = Gauge("facerec_gallery_subjects", "Subjects in the gallery.", registry=self.registry)
        self.gallery_faces = Gauge("facerec_gallery_faces", "Faces in the gallery.", registry=self.registry)

    def observe_call(self, operation: str, seconds: float, faces: int) -> None:
        """One model call of a route: its inference time (s) and the faces it handled."""
        self.inference.labels(operation).observe(seconds)
        self.faces.labels(operation).inc(faces)

    def observe_batch(self, faces: int, requests: int, seconds: float) -> None:
        """One micro-batcher encoder call: ``faces`` faces from ``requests`` requests in ``seconds``."""
        self.batch_faces.observe(faces)
        self.batch_requests.observe(requests)
        self.inference.labels("encode_batch").observe(seconds)

    def watch_detector(self, batcher: Any) -> None:
        """Report a detector's :class:`embeddings.call_batcher.CallBatcher` (None: nothing to report)."""
        if batcher is None:
            return
        self.detector_calls.set_function(lambda: batcher.stats.calls)
        self.detector_jobs.set_function(lambda: batcher.stats.jobs)
        self.detector_queue.set_function(lambda: batcher.queued)

    def watch_budget(self, budget: Any) -> None:
        """Report a :class:`service.pixel_budget.PixelBudget` (None: nothing to report)."""
        if budget is None:
            return
        self.decode_pixels.set_function(lambda: budget.held)
        self.decode_waiting.set_function(lambda: budget.waiting)
        self.decode_waits.set_function(lambda: budget.waits)

    def render(self, *, subjects: int | None, faces: int | None) -> bytes:
        """The text exposition, with the gallery gauges refreshed."""
        if subjects is not None:
            self.subjects.set(subjects)
        if faces is not None:
            self.gallery_faces.set(faces)
        return generate_latest(self.registry)


class MetricsMiddleware:
    """Counts and times every HTTP request under its route template (``/v1/subjects/{subject_id}``)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    @staticmethod
    def _route(scope: Scope) -> str:
        """The matched route's template, which the router leaves in ``scope["route"]``; else ``unmatched``."""
        route = scope.get("route")
        path = getattr(route, "path_format", None) or getattr(route, "path", None)
        return str(path) if path else "unmatched"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500
        start = time.perf_counter()

        async def recording_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, recording_send)
        finally:
            method, route = scope["method"], self._route(scope)
            self.metrics.requests.labels(method, route, str(status)).inc()
            self.metrics.latency.labels(method, route).observe(time.perf_counter() - start)
