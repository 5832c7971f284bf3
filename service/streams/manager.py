"""The live streams of one server: create, list, read health, delete; started from the store at startup.

Each process runs a :class:`StreamWorker` for exactly the streams it is to read: every stored stream with the
embedded store; with a shared store (PostgreSQL, several replicas), those whose lease it holds
(:meth:`StreamStore.claim`), re-checked every ``renew_s`` seconds: a stream added or freed elsewhere is started
here if this process wins its lease, one deleted elsewhere or leased away is stopped, and one whose URL or fps was
changed elsewhere is restarted with them (a new name is taken without reconnecting). A process that cannot renew
its leases for longer than they last stops its workers (another replica may have taken them over).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

from service.gallery.errors import StorageError, log_background_failure
from service.streams.backoff import DEFAULT_MAX_S
from service.streams.store import StreamConfig, StreamNotFound, StreamStore
from service.streams.worker import StreamWorker
from service.video.decode import redact
from service.video.deps import FrameDeps

log = logging.getLogger("facerec.streams")

WAITING: dict[str, Any] = {
    "state": "waiting",
    "fps_in": 0.0,
    "fps_processed": 0.0,
    "frames_in": 0,
    "frames_processed": 0,
    "frames_dropped": 0,
    "lag_ms": None,
    "event_latency_ms_p50": None,
    "events": 0,
    "reconnects": 0,
    "last_error": None,
    "last_error_at": None,
    "connected_since": None,
    "next_attempt_at": None,
}
"""The health of a stream no replica has reported reading yet."""


class StreamManager:
    """Owns one :class:`StreamWorker` per stream this process reads (reconnecting with waits of at most
    ``max_backoff_s``, s); thread-safe."""

    def __init__(
        self,
        store: StreamStore,
        deps: FrameDeps,
        *,
        max_streams: int,
        renew_s: float = 5.0,
        max_backoff_s: float = DEFAULT_MAX_S,
    ) -> None:
        self.store = store
        self.deps = deps
        self.max_streams = max_streams
        self.max_backoff_s = max_backoff_s
        self.renew_s = renew_s
        self._workers: dict[str, StreamWorker] = {}
        self._deleted: set[str] = set()  # deleted while a sync was in flight; cleared when none is (see sync)
        self._changed: dict[str, StreamConfig] = {}  # changed here while a sync was in flight; cleared likewise
        self._syncing = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._renewed = time.monotonic()
        self._thread: threading.Thread | None = None

    def start(self) -> StreamManager:
        """Start the workers of the streams this process is to read (after a restart); with a shared store, the
        thread that keeps the leases (a shared store that fails now, such as a database away or read-only, is
        tried again by that thread)."""
        if not self.store.shared:
            self.sync()
            return self
        try:
            self.sync()
        except StorageError as e:
            log_background_failure(log, "stream leases: the first renewal", e)
        self._thread = threading.Thread(target=self._lease_loop, name="facerec-stream-leases", daemon=True)
        self._thread.start()
        return self

    def sync(self) -> None:
        """Run exactly the streams this process is to read now (see the module doc)."""
        with self._lock:
            self._syncing += 1
        try:
            configs = {c.id: c for c in self.store.all()}
            with self._lock:
                health = {i: w.health() for i, w in self._workers.items()}
            mine = self.store.claim(list(configs), health)
            self._renewed = time.monotonic()
            with self._lock:
                # a change made here after the store was read above wins over what was read
                configs.update({i: cfg for i, cfg in self._changed.items() if i in configs})
                gone = [self._workers.pop(i) for i in list(self._workers) if i not in mine]
                gone += [old for i in mine if i in self._workers and (old := self._apply(configs[i])) is not None]
                new = [configs[i] for i in mine if i not in self._workers and i not in self._deleted]
                for cfg in new:
                    self._workers[cfg.id] = self._worker(cfg)
        finally:
            with self._lock:
                self._syncing -= 1
                if not self._syncing:  # every later sync reads the store after these changes: forget them
                    self._deleted.clear()
                    self._changed.clear()
        for worker in gone:
            worker.stop()

    def _worker(self, cfg: StreamConfig) -> StreamWorker:
        return StreamWorker(cfg, self.deps, max_backoff_s=self.max_backoff_s).start()

    def _apply(self, cfg: StreamConfig) -> StreamWorker | None:
        """Give the running worker of ``cfg.id`` its settings now (the lock held): a new URL or fps replaces it by
        a new worker, returned to be stopped (outside the lock); a new name alone is taken as it runs."""
        worker = self._workers[cfg.id]
        if (worker.cfg.url, worker.cfg.fps) != (cfg.url, cfg.fps):
            self._workers[cfg.id] = self._worker(cfg)
            return worker
        worker.cfg = cfg
        return None

    def _lease_loop(self) -> None:
        while not self._stop.wait(self.renew_s):
            try:
                self.sync()
            except Exception as e:
                log_background_failure(log, "stream leases: renewal", e)
                if time.monotonic() - self._renewed > 3 * self.renew_s:
                    self._stop_workers()  # our leases have run out: another replica may read these streams now

    def add(self, *, name: str, url: str, fps: float) -> dict[str, Any]:
        """Store a stream and start reading it (here, or on the replica that wins its lease); its description."""
        cfg = self.store.add(name=name, url=url, fps=fps, limit=self.max_streams)
        self.sync()
        return self.view(cfg.id)

    def update(
        self, stream_id: str, *, name: str | None = None, url: str | None = None, fps: float | None = None
    ) -> dict[str, Any]:
        """Change a stream in place (``None``: unchanged; :meth:`StreamStore.update`), keeping its id; its
        description. Its reader restarts with a new URL or fps here at once (the new worker starts before the old
        one stops, so a deletion meanwhile stops the new one), on another replica at that one's next renewal; a new
        name alone does not reconnect."""
        if name is None and url is None and fps is None:
            return self.view(stream_id)
        cfg = self.store.update(stream_id, name=name, url=url, fps=fps)
        with self._lock:
            if self._syncing:  # a sync that read the store before this change must not restart the old settings
                self._changed[stream_id] = cfg
            old = self._apply(cfg) if stream_id in self._workers else None
        if old is not None:
            old.stop()
        return self.view(stream_id)

    def view(self, stream_id: str) -> dict[str, Any]:
        """One stream as the API shows it (:func:`describe`); :class:`StreamNotFound`."""
        found = [cfg for cfg in self.store.all() if cfg.id == stream_id]
        if not found:
            raise StreamNotFound(stream_id)
        return self._describe(found)[0]

    def views(self) -> list[dict[str, Any]]:
        """Every stored stream, oldest first, with its health: this process's worker's, else the one its reader
        last published (or :data:`WAITING`)."""
        return self._describe(self.store.all())

    def _describe(self, configs: list[StreamConfig]) -> list[dict[str, Any]]:
        """``configs`` with their health (the published ones read only when a stream is not read here)."""
        with self._lock:
            local = {cfg.id: self._workers[cfg.id].health() for cfg in configs if cfg.id in self._workers}
        remote = self.store.healths() if self.store.shared and len(local) < len(configs) else {}
        return [describe(cfg, local.get(cfg.id) or remote.get(cfg.id) or WAITING) for cfg in configs]

    def workers(self) -> list[StreamWorker]:
        """The workers of this process (the streams it reads)."""
        with self._lock:
            return list(self._workers.values())

    def __iter__(self) -> Iterator[StreamWorker]:
        return iter(self.workers())

    def delete(self, stream_id: str) -> None:
        """Remove a stream; its reader stops (here at once, on another replica at its next renewal)."""
        self.store.delete(stream_id)
        with self._lock:
            if self._syncing:  # a sync that read the store before this deletion must not start it again
                self._deleted.add(stream_id)
            worker = self._workers.pop(stream_id, None)
        if worker is not None:
            worker.stop()

    def _stop_workers(self) -> list[str]:
        with self._lock:
            workers, self._workers = dict(self._workers), {}
        for w in workers.values():
            w.stop()
        return list(workers)

    def close(self) -> None:
        """Stop the workers and hand their leases back (another replica takes the streams at its next renewal)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10.0)
        ids = self._stop_workers()
        if self.store.shared and ids:
            try:
                self.store.release(ids)
            except Exception:  # the leases then expire by themselves
                log.warning("stream leases: could not release %d on shutdown", len(ids))


def describe(cfg: StreamConfig, health: dict[str, Any]) -> dict[str, Any]:
    """A stream as the API shows it: its settings (URL credentials redacted) and health."""
    return {
        "id": cfg.id,
        "name": cfg.name,
        "url": redact(cfg.url),
        "fps": cfg.fps,
        "created_at": cfg.created_at,
        "health": health,
    }
