"""How long a live stream waits before it tries its source again: :class:`Backoff`, exponential from
:data:`FIRST_S` doubling up to a cap (``FACEREC_STREAM_MAX_BACKOFF_S``, default 60 s), each wait drawn within
+-:data:`JITTER` of that delay so that many cameras behind one failing recorder do not retry in lock-step."""

from __future__ import annotations

import random
from collections.abc import Callable

FIRST_S = 0.25
"""The first wait after a failure, s."""

DEFAULT_MAX_S = 60.0
"""The longest wait by default (``FACEREC_STREAM_MAX_BACKOFF_S``), s."""

JITTER = 0.2
"""Each wait is the delay times a random factor in [1 - JITTER, 1 + JITTER]."""


class Backoff:
    """The waits (s) between a stream's failed attempts: ``first_s``, doubling, capped at ``max_s``, jittered;
    :meth:`reset` after a connection that stayed up. ``rand`` returns a float in [0, 1) (tests pass their own)."""

    def __init__(self, max_s: float, *, first_s: float = FIRST_S, rand: Callable[[], float] = random.random) -> None:
        if not 0 < first_s <= max_s:
            raise ValueError(f"backoff: need 0 < first_s ({first_s}) <= max_s ({max_s})")
        self.max_s, self.first_s, self._rand = max_s, first_s, rand
        self._delay = first_s

    def next(self) -> float:
        """The wait before the next attempt, s (the delay jittered); the following delay doubles, up to the cap."""
        wait = self._delay * (1.0 + JITTER * (2.0 * self._rand() - 1.0))
        self._delay = min(self._delay * 2.0, self.max_s)
        return wait

    def reset(self) -> None:
        """Start again from ``first_s`` (the source was up long enough to count as working)."""
        self._delay = self.first_s
