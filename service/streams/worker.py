"""One live stream: a reader thread that keeps only the newest frame, a processor thread that tracks faces
on it at most ``fps`` times a second, each frame passing the shared CPU gate, and a decider thread that embeds
the views of the tracks due for a decision and records their events, while the processor goes on with the next
frames (a small pipeline: on two cores, decoding, detection and the encoder overlap).

Overload drops frames, never requests: the reader overwrites a frame the processor has not taken yet (counted
as dropped), and the processor takes the newest frame only once it holds the gate, whose few permits are all the
CPU that streams and video jobs may use at once. A failed open or read is retried with exponential backoff
(:class:`~service.streams.backoff.Backoff`: 0.25 s doubling up to ``max_backoff_s``, each wait +-20 %; the health's
``next_attempt_at`` says when); a connection that ends within ``STABLE_S`` of opening (a snapshot URL, a camera
that accepts and hangs up) counts as a failed open, so such a source is not reopened in a tight loop. Stopping
the worker ends a wait at once. The tracker's clock stops while the stream is down, so a person still in view
after a reconnect keeps their track and is not announced twice.
"""

from __future__ import annotations

import logging
import queue
import statistics
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from service.config import MIN_FPS
from service.events.recorder import event_of, stream_event_id
from service.gallery.errors import StorageUnavailable
from service.streams.backoff import DEFAULT_MAX_S, Backoff
from service.streams.store import StreamConfig
from service.video.decode import VideoError, open_capture, redact, to_rgb
from service.video.deps import FrameDeps
from service.video.pipeline import DueTrack, LiveFace, TrackPipeline, for_period
from service.video.storage_retry import until_stored

log = logging.getLogger("facerec.streams")

WINDOW_S = 5.0
"""Rates (frames per second in and processed) are averaged over this many seconds."""

STABLE_S = 5.0
"""A connection that lasted this long (s) resets the reconnection backoff; one ending sooner backs off."""


@dataclass
class _Frame:
    bgr: npt.NDArray[np.uint8]
    captured: float  # time.monotonic() when read
    t: float  # the stream clock, s (stops while disconnected)


class StreamWorker:
    """See the module docstring. ``analyzer`` may return None while the model loads (frames are dropped).
    ``backoff``: the reconnection waits (default: :class:`Backoff` capped at ``max_backoff_s``, s)."""

    def __init__(
        self,
        cfg: StreamConfig,
        deps: FrameDeps,
        *,
        open_timeout_s: float = 5.0,
        max_backoff_s: float = DEFAULT_MAX_S,
        backoff: Backoff | None = None,
    ) -> None:
        self.cfg = cfg
        self.deps = deps
        self.open_timeout_s = open_timeout_s
        self._backoff = backoff or Backoff(max_backoff_s)
        self.source = f"stream:{cfg.id}"
        self.state = "connecting"
        self.last_error: str | None = None
        self.last_error_at: float | None = None  # Unix s
        self.next_attempt_at: float | None = None  # Unix s, while waiting to try the source again
        self.reconnects = 0
        self.frames_in = self.frames_processed = self.frames_dropped = self.events = 0
        self.lag_s: float | None = None
        self.connected_since: float | None = None
        self.faces: list[LiveFace] = []
        self.latencies: deque[float] = deque(maxlen=500)
        self._in_times: deque[float] = deque(maxlen=2000)
        self._done_times: deque[float] = deque(maxlen=2000)
        self._slot: _Frame | None = None
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._outage_s = 0.0
        self._t0 = time.monotonic()
        self._due: queue.Queue[tuple[TrackPipeline, DueTrack, float] | None] = queue.Queue()
        self._threads = [
            threading.Thread(target=self._read_loop, name=f"facerec-stream-read-{cfg.id[:8]}", daemon=True),
            threading.Thread(target=self._process_loop, name=f"facerec-stream-proc-{cfg.id[:8]}", daemon=True),
            threading.Thread(target=self._decide_loop, name=f"facerec-stream-decide-{cfg.id[:8]}", daemon=True),
        ]

    def start(self) -> StreamWorker:
        for t in self._threads:
            t.start()
        return self

    def stop(self, timeout_s: float = 10.0) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        for t in self._threads[:2]:
            t.join(timeout_s)
        self._due.put(None)  # after the processor: the decisions it handed over are still recorded
        self._threads[2].join(timeout_s)
        self.state = "stopped"

    # ---- reading ---------------------------------------------------------------------------------

    def _back_off(self) -> None:
        """Wait the next backoff (ended at once by :meth:`stop`), showing when the next attempt is due."""
        wait = self._backoff.next()
        self.next_attempt_at = time.time() + wait
        self._stop.wait(wait)
        self.next_attempt_at = None

    def _read_loop(self) -> None:
        connected_before = False
        down_since = time.monotonic()
        while not self._stop.is_set():
            try:
                cap = open_capture(self.cfg.url, timeout_s=self.open_timeout_s)
            except VideoError as exc:
                self._error(str(exc))
                self.state = "reconnecting" if connected_before else "connecting"
                self._back_off()
                continue
            if connected_before:
                self.reconnects += 1
                log.info("stream %s reconnected to %s", self.cfg.id, redact(self.cfg.url))
            connected_before = True
            opened = time.monotonic()
            self._outage_s += opened - down_since
            self.state, self.connected_since = "running", time.time()
            try:
                while not self._stop.is_set():
                    ok, frame = cap.read()
                    if not ok or frame is None:
                        self._error("the stream stopped sending frames")
                        break
                    now = time.monotonic()
                    self.frames_in += 1
                    self._in_times.append(now)
                    with self._cond:
                        if self._slot is not None:
                            self.frames_dropped += 1
                        self._slot = _Frame(np.asarray(frame, dtype=np.uint8), now, now - self._t0 - self._outage_s)
                        self._cond.notify()
            finally:
                cap.release()
            down_since = time.monotonic()
            if not self._stop.is_set():
                self.state, self.connected_since = "reconnecting", None
                log.warning("stream %s lost (%s); reconnecting", self.cfg.id, self.last_error)
                if down_since - opened >= STABLE_S:
                    self._backoff.reset()
                else:  # it opened but ended at once: wait as after a failed open
                    self._back_off()

    # ---- processing ------------------------------------------------------------------------------

    def _take(self) -> _Frame | None:
        with self._cond:
            while self._slot is None and not self._stop.is_set():
                self._cond.wait(0.5)
            frame, self._slot = self._slot, None
            return frame

    def _process_loop(self) -> None:
        pipe: TrackPipeline | None = None
        period = 1.0 / max(self.cfg.fps, MIN_FPS) if self.cfg.fps > 0 else 0.0  # a row stored before MIN_FPS
        next_at = 0.0
        while not self._stop.is_set():
            with self._cond:
                while self._slot is None and not self._stop.is_set():
                    self._cond.wait(0.5)
            if self._stop.is_set():
                break
            wait = next_at - time.monotonic()
            if wait > 0:  # over the configured rate: frames arriving meanwhile replace each other (dropped)
                self._stop.wait(wait)
            analyzer = self.deps.analyzer()
            if analyzer is None:
                if self._take() is not None:
                    self.frames_dropped += 1
                continue
            if pipe is None:
                config = for_period(self.deps.config(), period)
                pipe = TrackPipeline(analyzer, self.deps.gallery, config, deferred=True)
            with self.deps.gate:
                frame = self._take()
                if frame is None:
                    continue
                next_at = time.monotonic() + period
                try:
                    result = pipe.process(to_rgb(frame.bgr), frame.t)
                except Exception as exc:  # one bad frame must not stop the stream
                    log.exception("stream %s: a frame failed", self.cfg.id)
                    self._error(f"processing failed: {type(exc).__name__}")
                    continue
            done = time.monotonic()
            self.frames_processed += 1
            self._done_times.append(done)
            self.lag_s = done - frame.captured
            self.faces = result.faces
            for due in result.due:
                self._due.put((pipe, due, frame.captured))

    def _decide_loop(self) -> None:
        """Decide each due track (outside the CPU gate: a few encoder calls per person seen) and record its
        event; the latency is from the deciding frame's capture to the event stored."""
        while (item := self._due.get()) is not None:
            pipe, due, captured = item
            if self._decide(pipe, due):
                self.events += 1
                self.latencies.append(time.monotonic() - captured)

    def _decide(self, pipe: TrackPipeline, due: DueTrack) -> bool:
        """Decide one track and record its event; while the gallery or the event store is away (a database
        restarting) try again (:func:`~service.video.storage_retry.until_stored`). False when the event was not
        recorded."""
        event_id = stream_event_id()  # one id for every try: a try whose commit was not acknowledged adds none

        def attempt() -> None:
            decision = pipe.decide(due)
            self.deps.recorder.record([event_of(decision, source=self.source, event_id=event_id)])

        def waiting(exc: StorageUnavailable) -> None:
            self._error(f"decision failed: {type(exc).__name__}")
            log.warning("stream %s: a decision waits for the storage (%s)", self.cfg.id, exc)

        try:
            until_stored(attempt, waiting=waiting)
            return True
        except StorageUnavailable as exc:
            self._error(f"decision failed: {type(exc).__name__}")
            log.error("stream %s: a decision was dropped, the storage is away: %s", self.cfg.id, exc)
        except Exception as exc:  # one failed decision must not stop the stream
            log.exception("stream %s: a decision failed", self.cfg.id)
            self._error(f"decision failed: {type(exc).__name__}")
        return False

    # ---- health ----------------------------------------------------------------------------------

    def _error(self, message: str) -> None:
        """Record ``message`` (safe to show) as the last error, stamped now (Unix s)."""
        self.last_error, self.last_error_at = message, time.time()

    @staticmethod
    def _rate(times: deque[float]) -> float:
        now = time.monotonic()
        recent = [t for t in list(times) if now - t <= WINDOW_S]
        return round(len(recent) / WINDOW_S, 2)

    def health(self) -> dict[str, Any]:
        """State, rates (frames/s over the last 5 s), counters, lag (ms), last error (credentials redacted) and
        when it happened (Unix s: older than ``connected_since`` when the stream has recovered since), and while it
        waits to try the source again, when it will (``next_attempt_at``, Unix s; else None)."""
        lat = list(self.latencies)
        return {
            "state": self.state,
            "fps_in": self._rate(self._in_times),
            "fps_processed": self._rate(self._done_times),
            "frames_in": self.frames_in,
            "frames_processed": self.frames_processed,
            "frames_dropped": self.frames_dropped,
            "lag_ms": None if self.lag_s is None else round(self.lag_s * 1000.0, 1),
            "event_latency_ms_p50": round(statistics.median(lat) * 1000.0, 1) if lat else None,
            "events": self.events,
            "reconnects": self.reconnects,
            "last_error": self.last_error,
            "last_error_at": self.last_error_at,
            "connected_since": self.connected_since,
            "next_attempt_at": self.next_attempt_at,
        }
