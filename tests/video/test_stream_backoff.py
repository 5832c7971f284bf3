"""A stream whose source keeps failing (a camera answering 401 to a wrong password, served by a small HTTP server
in this test and read by the real worker through OpenCV's FFmpeg backend) is tried again with waits that double up
to ``FACEREC_STREAM_MAX_BACKOFF_S``, jittered, shown in the health's ``next_attempt_at``; stopping the stream ends
a long wait at once. The waits themselves (:class:`Backoff`) are checked with a chosen random source, no sleeping."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, cast

import pytest

from service.config import Settings
from service.streams.backoff import DEFAULT_MAX_S, Backoff
from service.streams.manager import StreamManager
from service.streams.store import SQLiteStreamStore, StreamConfig
from service.streams.worker import StreamWorker
from service.video.deps import FrameDeps


class LockedCamera:
    """Answers every GET with 401 (the password is wrong), noting when each failed login came (monotonic s: the
    requests with credentials; FFmpeg sends them after a first 401 without)."""

    def __init__(self) -> None:
        self.times: list[float] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.headers.get("Authorization"):
                    owner.times.append(time.monotonic())
                self.send_response(401)
                self.send_header("WWW-Authenticate", 'Basic realm="camera"')
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://door:wrong@127.0.0.1:{self.server.server_address[1]}/video.mjpg"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def locked() -> Iterator[LockedCamera]:
    cam = LockedCamera()
    yield cam
    cam.close()


def worker_on(url: str, **kwargs: Any) -> StreamWorker:
    """A started worker on ``url`` without a model (only its reader is tested)."""
    deps = FrameDeps(lambda: None, lambda: None, cast(Any, None), cast(Any, None), threading.Semaphore(1))
    return StreamWorker(StreamConfig("b" * 32, "camera", url, 5.0, time.time()), deps, **kwargs).start()


def wait_for(cond: Any, timeout_s: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if value := cond():
            return value
        time.sleep(0.05)
    raise AssertionError("timed out")


def test_the_waits_double_up_to_the_cap_and_are_jittered_by_a_fifth() -> None:
    middle = Backoff(8.0, rand=lambda: 0.5)  # no jitter
    assert [middle.next() for _ in range(7)] == [0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 8.0]
    low, high = Backoff(8.0, rand=lambda: 0.0), Backoff(8.0, rand=lambda: 0.999999)
    lows, highs = [low.next() for _ in range(7)], [high.next() for _ in range(7)]
    assert lows[0] == pytest.approx(0.2) and lows[-1] == pytest.approx(6.4)
    assert highs[0] == pytest.approx(0.3) and highs[-1] == pytest.approx(9.6)


def test_a_connection_that_stayed_up_starts_the_waits_again() -> None:
    backoff = Backoff(60.0, rand=lambda: 0.5)
    for _ in range(20):
        backoff.next()
    assert backoff.next() == 60.0
    backoff.reset()
    assert backoff.next() == 0.25


def test_cameras_failing_together_do_not_retry_in_lock_step() -> None:
    cameras = [Backoff(60.0) for _ in range(20)]
    for backoff in cameras:
        for _ in range(10):
            backoff.next()
    waits = [backoff.next() for backoff in cameras]
    assert all(48.0 <= w <= 72.0 for w in waits)
    assert max(waits) - min(waits) > 5.0  # 20 draws within +-12 s: spread out, not one instant


def test_the_longest_wait_is_a_setting_of_60_s_by_default(tmp_path: Any) -> None:
    assert Settings().stream_max_backoff_s == DEFAULT_MAX_S == 60.0
    assert Settings(stream_max_backoff_s=600).stream_max_backoff_s == 600.0
    for bad in (0, 0.1, -1, 86401):
        with pytest.raises(ValueError, match="stream_max_backoff_s"):
            Settings(stream_max_backoff_s=bad)
    store = SQLiteStreamStore(tmp_path)
    manager = StreamManager(store, cast(FrameDeps, None), max_streams=1, max_backoff_s=600.0)
    try:
        assert manager.max_backoff_s == 600.0
    finally:
        store.close()


def test_a_wrong_password_is_tried_again_at_most_once_per_longest_wait(locked: LockedCamera) -> None:
    """With the longest wait at 1 s: attempts at about 0, 0.25, 0.75, 1.75, 2.75 ... s, then one a second."""
    worker = worker_on(locked.url, max_backoff_s=1.0)
    try:
        wait_for(lambda: len(locked.times) >= 6)
        health = worker.health()
    finally:
        worker.stop()
    gaps = [b - a for a, b in zip(locked.times, locked.times[1:], strict=False)]
    assert 0.2 - 0.05 <= gaps[0] <= 0.3 + 0.5, gaps
    assert all(0.8 - 0.05 <= g <= 1.2 + 0.5 for g in gaps[3:5]), gaps  # capped (+-20 %, + an open's time)
    assert health["state"] == "connecting" and health["last_error"].startswith("cannot open")
    assert "wrong" not in health["last_error"]


def test_the_next_attempt_is_shown_and_stopping_ends_a_long_wait_at_once(locked: LockedCamera) -> None:
    worker = worker_on(locked.url, backoff=Backoff(60.0, first_s=30.0))
    try:
        health = wait_for(lambda: (h := worker.health())["next_attempt_at"] is not None and h)
        assert time.time() + 30.0 * 0.8 - 1.0 <= health["next_attempt_at"] <= time.time() + 30.0 * 1.2
        assert len(locked.times) == 1 and health["last_error_at"] <= time.time()
    finally:
        started = time.monotonic()
        worker.stop()
    assert time.monotonic() - started < 1.0  # not the rest of the 30 s wait
    assert len(locked.times) == 1 and worker.health()["next_attempt_at"] is None
    assert worker.health()["state"] == "stopped"
