"""Run blocking model work off the event loop, in a bounded number of threads with a bounded queue."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import Any, TypeVar

import anyio
import anyio.to_thread

from service.errors import Overloaded

T = TypeVar("T")


class Runner:
    """At most ``threads`` calls run at once and ``max_pending`` wait; one more is refused with 429."""

    def __init__(self, *, threads: int, max_pending: int) -> None:
        self.limiter = anyio.CapacityLimiter(threads)
        self.max_pending = max_pending
        self.in_flight = 0

    async def run(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> tuple[T, float]:
        """``(fn(*args, **kwargs), seconds)`` from a worker thread; :class:`Overloaded` when full."""
        if self.in_flight >= self.max_pending + self.limiter.total_tokens:
            raise Overloaded(
                f"{self.in_flight} requests are already waiting for the model; retry shortly",
                headers={"Retry-After": "1"},
            )
        self.in_flight += 1
        try:
            start = time.perf_counter()
            result = await anyio.to_thread.run_sync(functools.partial(fn, *args, **kwargs), limiter=self.limiter)
            return result, time.perf_counter() - start
        finally:
            self.in_flight -= 1
