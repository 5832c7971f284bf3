"""How many decoded pixels the server's requests may hold at once (``FACEREC_DECODE_BUDGET_MP``).

A decoded photo costs 3 bytes a pixel for as long as its request runs, and about 2.5 times that for a moment while
it decodes: twelve 40-megapixel uploads at once took a server from 0.45 to 3.1 GB (``bench/decode_concurrent.py``).
Every request thread may run the pipeline at once (``FACEREC_INFERENCE_THREADS`` plus a micro-batch of them), so
the number of threads bounds nothing here. :class:`PixelBudget` does: before an image is decoded
(:data:`embeddings.images.DECODE_ADMISSION`), its request waits, first come first served, until the pixels held
by the other requests leave room for it; the pixels are given back when the request's model work ends. An image
larger than the whole budget waits until nothing else is held, then runs alone. A request that already holds
pixels (a batch of photos) never waits again, so two requests can never wait on each other.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from embeddings.images import DECODE_ADMISSION


class PixelBudget:
    """At most ``capacity`` pixels (width x height) held by requests at once; see the module docstring."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.held = 0
        """Pixels held now, by every request together."""
        self.waits = 0
        """Decodes that had to wait for room since start."""
        self._cond = threading.Condition()
        self._queue: collections.deque[object] = collections.deque()
        self._local = threading.local()

    @property
    def waiting(self) -> int:
        """Requests waiting for room now."""
        return len(self._queue)

    def admit(self, pixels: int) -> None:
        """Hold ``pixels`` for the calling request until its :meth:`scope` ends; wait for room if this request
        holds nothing yet. Outside a scope there is nothing to give the pixels back: no wait, nothing held."""
        mine: list[int] | None = getattr(self._local, "held", None)
        if mine is None:
            return
        with self._cond:
            if mine[0] == 0:
                ticket = object()
                self._queue.append(ticket)
                if not self._fits(ticket, pixels):
                    self.waits += 1
                    self._cond.wait_for(lambda: self._fits(ticket, pixels))
                self._queue.popleft()
                self._cond.notify_all()  # the next in line may fit too
            self.held += pixels
            mine[0] += pixels

    def _fits(self, ticket: object, pixels: int) -> bool:
        return self._queue[0] is ticket and (self.held == 0 or self.held + pixels <= self.capacity)

    @contextmanager
    def scope(self) -> Iterator[None]:
        """One request's model work in this thread: decodes in it are admitted by this budget, and what they
        hold is given back when it ends."""
        mine = [0]
        self._local.held = mine
        token = DECODE_ADMISSION.set(self.admit)
        try:
            yield
        finally:
            DECODE_ADMISSION.reset(token)
            del self._local.held
            if mine[0]:
                with self._cond:
                    self.held -= mine[0]
                    self._cond.notify_all()
