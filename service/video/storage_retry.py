"""A track's decision tried again while the gallery or the event store is away (a database restarting): live
sources keep their people instead of dropping them, for up to :data:`STORE_RETRY_S`."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TypeVar

from service.gallery.errors import StorageUnavailable

T = TypeVar("T")

STORE_RETRY_S = 120.0
"""How long a decision is tried again while the storage is unavailable, seconds."""
FIRST_WAIT_S, MAX_WAIT_S = 0.25, 5.0
"""The wait after the first refusal, doubled after each one up to the second, seconds."""


def until_stored(
    attempt: Callable[[], T],
    *,
    waiting: Callable[[StorageUnavailable], None],
    stop: threading.Event | None = None,
    give_up_s: float = STORE_RETRY_S,
) -> T:
    """``attempt()``, called again while it raises :class:`StorageUnavailable` (``waiting`` is told each time),
    with a doubling wait; the last refusal is raised once ``give_up_s`` have passed or ``stop`` is set. Any other
    exception is raised at once."""
    deadline, wait = time.monotonic() + give_up_s, FIRST_WAIT_S
    while True:
        try:
            return attempt()
        except StorageUnavailable as exc:
            if time.monotonic() + wait > deadline or (stop is not None and stop.is_set()):
                raise
            waiting(exc)
            if stop is None:
                time.sleep(wait)
            else:
                stop.wait(wait)
            wait = min(wait * 2, MAX_WAIT_S)
