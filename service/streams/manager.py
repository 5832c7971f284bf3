"""The live streams of one server: create, list, read health, delete; started from the store at startup."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

from service.streams.store import StreamConfig, StreamNotFound, StreamStore
from service.streams.worker import StreamWorker
from service.video.decode import redact
from service.video.deps import FrameDeps


class TooManyStreams(Exception):
    """The configured maximum of streams (``FACEREC_STREAMS_MAX``) is reached."""


class StreamManager:
    """Owns one :class:`StreamWorker` per stored stream; thread-safe."""

    def __init__(
        self,
        store: StreamStore,
        deps: FrameDeps,
        *,
        max_streams: int,
    ) -> None:
        self.store = store
        self.deps = deps
        self.max_streams = max_streams
        self._workers: dict[str, StreamWorker] = {}
        self._lock = threading.Lock()

    def start(self) -> StreamManager:
        """Start a worker for every stored stream (after a restart)."""
        for cfg in self.store.all():
            self._start(cfg)
        return self

    def _start(self, cfg: StreamConfig) -> StreamWorker:
        worker = StreamWorker(cfg, self.deps).start()
        with self._lock:
            self._workers[cfg.id] = worker
        return worker

    def add(self, *, name: str, url: str, fps: float) -> StreamWorker:
        with self._lock:
            if len(self._workers) >= self.max_streams:
                raise TooManyStreams(f"at most {self.max_streams} streams may run (FACEREC_STREAMS_MAX)")
        return self._start(self.store.add(name=name, url=url, fps=fps))

    def get(self, stream_id: str) -> StreamWorker:
        with self._lock:
            worker = self._workers.get(stream_id)
        if worker is None:
            raise StreamNotFound(stream_id)
        return worker

    def workers(self) -> list[StreamWorker]:
        with self._lock:
            return list(self._workers.values())

    def __iter__(self) -> Iterator[StreamWorker]:
        return iter(self.workers())

    def delete(self, stream_id: str) -> None:
        self.store.delete(stream_id)
        with self._lock:
            worker = self._workers.pop(stream_id, None)
        if worker is not None:
            worker.stop()

    def close(self) -> None:
        with self._lock:
            workers, self._workers = list(self._workers.values()), {}
        for w in workers:
            w.stop()


def describe(worker: StreamWorker) -> dict[str, Any]:
    """A stream as the API shows it: its settings (URL credentials redacted) and health."""
    cfg = worker.cfg
    return {
        "id": cfg.id,
        "name": cfg.name,
        "url": redact(cfg.url),
        "fps": cfg.fps,
        "created_at": cfg.created_at,
        "health": worker.health(),
    }
