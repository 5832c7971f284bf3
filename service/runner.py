"""Run blocking model work off the event loop, in a bounded number of threads with a bounded queue."""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any, TypeVar

import anyio
import anyio.to_thread

from service.errors import Overloaded
from service.pixel_budget import PixelBudget

T = TypeVar("T")


class Runner:
    """At most ``threads`` calls run at once and ``max_pending`` wait; one more is refused with 429.

    ``tracker`` (e.g. the micro-batcher's ``producer``) is entered around each call in its
    worker thread, so that the batcher knows how many requests are on their way to the encoder; ``budget``'s
    scope too, so that the photos a call decodes wait for room in it (:mod:`service.pixel_budget`).
    """

    def __init__(
        self,
        *,
        threads: int,
        max_pending: int,
        tracker: Callable[[], AbstractContextManager[Any]] | None = None,
        budget: PixelBudget | None = None,
    ) -> None:
        self.limiter = anyio.CapacityLimiter(threads)
        self.max_pending = max_pending
        self.in_flight = 0
        self.tracker = tracker
        self.budget = budget

    def _call(self, fn: Callable[[], T]) -> T:
        with (
            self.tracker() if self.tracker is not None else contextlib.nullcontext(),
            self.budget.scope() if self.budget is not None else contextlib.nullcontext(),
        ):
            return fn()

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
            call = functools.partial(self._call, functools.partial(fn, *args, **kwargs))
            result = await anyio.to_thread.run_sync(call, limiter=self.limiter)
            return result, time.perf_counter() - start
        finally:
            self.in_flight -= 1
