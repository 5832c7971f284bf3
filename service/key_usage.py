"""When each API key was last used (``last_used_at``), recorded without a write per request.

:meth:`LastUsed.used` is what a request calls once its key is known: it takes a lock for a dictionary lookup and
never touches storage. At most once per key per :data:`LAST_USED_EVERY_S` it queues the time, and one background
thread writes what is queued through the key store's ``mark_used`` (every key used since the last write, in one
transaction). A write that fails (read-only or full storage, a database away) is logged and dropped: the key's
next use after the interval tries again. So a request never waits on the write, whatever the storage does. Each
process (replica) records its own uses; the stores never move a time backwards, so the latest one wins.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Protocol

from service.keys import now_iso

log = logging.getLogger("facerec.keys")

LAST_USED_EVERY_S = 60.0
"""Seconds between two recorded uses of one key (by one process): ``last_used_at`` is at most this much behind."""

CLOSE_TIMEOUT_S = 2.0
"""How long :meth:`LastUsed.close` waits for the last write at shutdown, seconds."""


class MarksUsed(Protocol):
    def mark_used(self, used: Mapping[str, str]) -> None: ...


class LastUsed:
    """The ``last_used_at`` recorder of one process (see the module doc); thread-safe. ``clock`` is monotonic
    seconds (tests pass their own)."""

    def __init__(
        self, keys: MarksUsed, *, every_s: float = LAST_USED_EVERY_S, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._keys = keys
        self._every_s = every_s
        self._clock = clock
        self._due: dict[str, float] = {}  # key id -> clock time from which its next use is recorded
        self._pending: dict[str, str] = {}  # key id -> ISO time of the use to write
        self._writing = False
        self._closed = False
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None

    def used(self, key_id: str) -> None:
        """Note that a request presented ``key_id`` now; queues a write at most once per interval, never blocks
        on storage."""
        now = self._clock()
        with self._cond:
            if self._closed or now < self._due.get(key_id, now):
                return
            self._due[key_id] = now + self._every_s
            self._pending[key_id] = now_iso()
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="facerec-key-last-used", daemon=True)
                self._thread.start()
            self._cond.notify()

    def flush(self, timeout_s: float = CLOSE_TIMEOUT_S) -> bool:
        """Wait up to ``timeout_s`` seconds until every queued use has been written (or its write failed);
        whether it came to that."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._pending and not self._writing, timeout_s)

    def close(self, timeout_s: float = CLOSE_TIMEOUT_S) -> None:
        """Write what is queued (waiting up to ``timeout_s`` seconds) and stop the thread; later uses are not
        recorded."""
        self.flush(timeout_s)
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join(timeout_s)

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._pending or self._closed)
                if not self._pending:
                    return
                batch, self._pending = self._pending, {}
                self._writing = True
            try:
                self._keys.mark_used(batch)
            except Exception as exc:  # any storage failure: the request already has its answer
                log.warning("last use of %d key(s) not recorded: %s", len(batch), exc)
            finally:
                with self._cond:
                    self._writing = False
                    self._cond.notify_all()
