"""Per-caller rate limiting: an in-memory token bucket per API key id (per client IP without a key).

A bucket holds up to ``burst`` tokens and refills at ``per_minute / 60`` tokens a second; each request takes
one. An empty bucket is a 429 ``rate_limited`` whose ``Retry-After`` is the whole seconds (>= 1) until a
token is back. The check runs in the auth dependency, so only the ``/v1`` API is limited: ``/healthz``,
``/readyz``, ``/metrics``, the docs and the web page are not. Buckets live in one process's memory (a restart
refills them) and are guarded by one lock, so the limiter is safe from the event loop and from threads.
"""

from __future__ import annotations

import hashlib
import math
import threading
import time
from collections.abc import Callable

from service.errors import ServiceError

MAX_BUCKETS = 100_000  # idle full buckets are dropped beyond this, so unknown callers cannot grow memory
MAX_CALLER_CHARS = 100
"""Longer caller ids are keyed by their sha256: a client address can come from a forwarded header (uvicorn takes
``X-Forwarded-For`` from a loopback peer) and be any string, which must not size the buckets (memory, or the
shared limiter's indexed PostgreSQL column, whose btree refuses keys over ~2.7 kB)."""


def bucket_id(caller: str) -> str:
    """``caller`` as a bucket key of at most :data:`MAX_CALLER_CHARS` characters (long ids by their sha256)."""
    if len(caller) <= MAX_CALLER_CHARS:
        return caller
    return "sha256:" + hashlib.sha256(caller.encode("utf-8", "surrogatepass")).hexdigest()


class RateLimited(ServiceError):
    """429 in the error envelope; mapped by ``service.errors``' handler for :class:`ServiceError`."""

    status, code = 429, "rate_limited"


class RateLimiter:
    """Token buckets by caller id. ``per_minute <= 0`` turns limiting off."""

    def __init__(self, *, per_minute: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = per_minute / 60.0
        self.burst = float(max(1, burst))
        self.clock = clock
        self._lock = threading.Lock()
        self._buckets: dict[str, tuple[float, float]] = {}  # caller -> (tokens, last refill time)

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    def acquire(self, caller: str) -> float:
        """Take a token for ``caller``: 0.0 when allowed, else the seconds until one is available."""
        if not self.enabled:
            return 0.0
        now = self.clock()
        with self._lock:
            tokens, last = self._buckets.get(caller, (self.burst, now))
            tokens = min(self.burst, tokens + (now - last) * self.rate)
            if tokens >= 1.0:
                self._buckets[caller] = (tokens - 1.0, now)
                if len(self._buckets) > MAX_BUCKETS:
                    self._prune(now)
                return 0.0
            self._buckets[caller] = (tokens, now)
            return (1.0 - tokens) / self.rate

    def check(self, caller: str) -> None:
        """Raise :class:`RateLimited` (with ``Retry-After``) when ``caller`` is over its rate."""
        wait = self.acquire(bucket_id(caller))
        if wait > 0:
            seconds = max(1, math.ceil(wait))
            raise RateLimited(
                f"too many requests for this API key; retry in {seconds} s",
                headers={"Retry-After": str(seconds)},
            )

    def _prune(self, now: float) -> None:
        full = [c for c, (t, last) in self._buckets.items() if t + (now - last) * self.rate >= self.burst]
        for caller in full:
            del self._buckets[caller]
