"""A stream's reader on real sources (OpenCV's FFmpeg backend reading small HTTP servers in this test): a
source that opens and ends at once (a camera's snapshot URL) is reopened with backoff, not in a tight loop; after
a camera came back, the health tells that its last error is older than the connection."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, cast

import cv2
import numpy as np
import pytest

from bench.video_scenes import MjpegServer, Scene
from service.streams.store import StreamConfig
from service.streams.worker import StreamWorker
from service.video.deps import FrameDeps


class SnapshotCamera:
    """Answers every GET with one JPEG and closes: FFmpeg opens it, reads one frame, then the stream ends."""

    def __init__(self) -> None:
        jpg = cv2.imencode(".jpg", np.full((120, 160, 3), 128, np.uint8))[1].tobytes()
        self.requests = 0
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                owner.requests += 1
                self.send_response(200)
                self.send_header("Content-Type", "image/jpeg")
                self.send_header("Content-Length", str(len(jpg)))
                self.end_headers()
                self.wfile.write(jpg)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/snapshot.jpg"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def snapshot() -> Iterator[SnapshotCamera]:
    cam = SnapshotCamera()
    yield cam
    cam.close()


def reader_only(url: str) -> StreamWorker:
    """A worker on ``url`` without a model: the reader is what is tested (the processor drops every frame while
    the analyzer is None)."""
    deps = FrameDeps(lambda: None, lambda: None, cast(Any, None), cast(Any, None), threading.Semaphore(1))
    return StreamWorker(StreamConfig("a" * 32, "camera", url, 5.0, time.time()), deps).start()


def wait_for(worker: StreamWorker, state: str, timeout_s: float = 20.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if (health := worker.health())["state"] == state:
            return health
        time.sleep(0.1)
    raise AssertionError(f"the stream is {worker.health()['state']}, not {state}, after {timeout_s} s")


def test_a_source_that_ends_at_once_is_reopened_with_backoff(snapshot: SnapshotCamera) -> None:
    worker = reader_only(snapshot.url)
    try:
        time.sleep(4.0)
        health = worker.health()
    finally:
        worker.stop()
    # backoff 0.25 + 0.5 + 1 + 2 s: about 4 opens in 4 s (it reopened some 700 times a second)
    assert 1 <= snapshot.requests <= 6, snapshot.requests
    assert health["reconnects"] <= 5 and health["frames_in"] >= 1
    assert health["last_error"] == "the stream stopped sending frames"


def test_after_a_camera_came_back_its_last_error_is_dated_before_the_connection() -> None:
    camera = MjpegServer(Scene([], width=320, height=240, duration_s=2.0)).start()
    worker = reader_only(camera.url)
    try:
        assert wait_for(worker, "running")["last_error_at"] is None
        camera.stop()
        down = wait_for(worker, "reconnecting")
        assert down["last_error"] is not None and down["last_error_at"] <= time.time()
        camera.start()
        up = wait_for(worker, "running")
    finally:
        worker.stop()
        camera.stop()
    # the error is kept (what happened), with its time: older than the connection, so it is not a current one
    assert up["last_error"] is not None and up["reconnects"] == 1
    assert up["last_error_at"] <= up["connected_since"]
