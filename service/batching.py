"""Cross-request micro-batching of the encoder: concurrent requests share one FaceNet call.

One encoder thread owns the encoder. Request threads call :meth:`MicroBatcher.encode` with their aligned crops
and block until their rows come back. The thread gathers queued crops until one of:

- ``max_batch`` faces are waiting;
- ``max_wait_ms`` has passed since the oldest waiting crop was queued;
- no other request is still before its encode step (see :meth:`MicroBatcher.producer`), so a lone request
  never waits for company that is not coming;

then runs ONE encoder call on them (in queue order) and hands each caller its own rows. A caller that finds
the encoder idle, the queue empty and no other request on its way runs its call inline in its own thread (the
same single call, without the two thread wake-ups of the hand-over); encoder calls never overlap.

The queue is bounded (``max_queue`` faces): a submit that would overflow it raises :class:`Overloaded` (429
with ``Retry-After``) and enqueues nothing. An encoder error reaches only the callers of that batch.
:meth:`close` encodes what is already queued, refuses new work with :class:`NotReady` (503), joins the thread,
and fails anything still waiting after its timeout.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from embeddings.encoders import Encoder
from service.errors import NotReady, Overloaded

log = logging.getLogger("facerec.service")

Crops = npt.NDArray[np.uint8]
Embeddings = npt.NDArray[np.float32]
EncodeFn = Callable[[Crops], Embeddings]
BatchObserver = Callable[[int, int, float], None]
"""Called after each encoder call with (faces, requests, seconds)."""


@dataclass(slots=True)
class _Job:
    crops: Crops
    future: Future[Embeddings]
    queued_at: float  # time.monotonic() seconds


class MicroBatcher:
    """A bounded queue of crops in front of one encoder thread. Thread-safe; see the module docstring.

    ``encode`` maps (N, 160, 160, 3) uint8 crops to (N, D) embeddings, row i for crop i; it is only ever called
    from the batcher's own thread. ``max_batch`` is in faces (a single request with more faces is encoded
    alone); ``max_wait_ms`` in milliseconds; ``max_queue`` in faces (a request is always admitted into an empty
    queue, whatever its size).
    """

    def __init__(
        self,
        encode: EncodeFn,
        *,
        max_batch: int = 32,
        max_wait_ms: float = 50.0,
        max_queue: int = 128,
        on_batch: BatchObserver | None = None,
        name: str = "facerec-encoder",
    ) -> None:
        if max_batch < 1 or max_queue < 1 or max_wait_ms < 0:
            raise ValueError("max_batch and max_queue must be >= 1 and max_wait_ms >= 0")
        self._encode = encode
        self.max_batch = max_batch
        self.max_wait_s = max_wait_ms / 1000.0
        self.max_queue = max_queue
        self._on_batch = on_batch
        self._cv = threading.Condition()
        self._queue: deque[_Job] = deque()
        self._queued_faces = 0
        self._producers = 0  # requests inside producer(): somewhere in decode/detect/align/encode
        self._blocked = 0  # producers waiting in encode() for their rows
        self._closed = False
        self._busy = False  # an encoder call is running (in the encoder thread or inline in a lone caller)
        self._local = threading.local()  # .depth: producer() nesting of the current thread
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    # ---- callers ---------------------------------------------------------------------------------------

    @property
    def queued_faces(self) -> int:
        """Faces waiting in the queue (not counting the batch being encoded)."""
        return self._queued_faces

    @contextmanager
    def producer(self) -> Iterator[None]:
        """Mark the calling request as on its way to :meth:`encode` (wrap the whole pipeline of one request).

        While some marked request has not yet submitted, the batcher waits (up to ``max_wait_ms``) for it;
        when none is left, it dispatches at once. Unmarked callers are still batched, just never waited for.
        """
        depth = getattr(self._local, "depth", 0)
        if depth:  # nested: the thread is already counted
            yield
            return
        self._local.depth = 1
        with self._cv:
            self._producers += 1
        try:
            yield
        finally:
            self._local.depth = 0
            with self._cv:
                self._producers -= 1
                self._cv.notify_all()

    def encode(self, crops: Crops) -> Embeddings:
        """Embed ``crops`` in a shared encoder call; blocks until done. Same contract as the wrapped encoder.

        Raises :class:`Overloaded` (nothing queued) when the queue is full, :class:`NotReady` once closed, or
        whatever the encoder raised for this batch.
        """
        crops = np.asarray(crops)
        n = len(crops)
        if n == 0:
            return self._encode(crops)
        future: Future[Embeddings] = Future()
        marked = getattr(self._local, "depth", 0) > 0
        with self._cv:
            if self._closed:
                raise NotReady("the encoder is shutting down", headers={"Retry-After": "5"})
            if self._queued_faces and self._queued_faces + n > self.max_queue:
                raise Overloaded(
                    f"{self._queued_faces} faces are already waiting for the encoder; retry shortly",
                    headers={"Retry-After": "1"},
                )
            inline = not self._busy and not self._queue and self._producers - self._blocked - marked <= 0
            if inline:  # alone: skip the hand-over to the encoder thread (two thread wake-ups)
                self._busy = True
            else:
                self._queue.append(_Job(crops, future, time.monotonic()))
                self._queued_faces += n
                self._blocked += marked
                self._cv.notify_all()
        if inline:
            return self._encode_inline(crops)
        try:
            return future.result()
        finally:
            if marked:
                with self._cv:
                    self._blocked -= 1

    def _encode_inline(self, crops: Crops) -> Embeddings:
        start = time.perf_counter()
        try:
            out = self._encode(crops)
        finally:
            with self._cv:
                self._busy = False
                self._cv.notify_all()
        self._observe(len(crops), 1, time.perf_counter() - start)
        return out

    def close(self, timeout: float = 30.0) -> None:
        """Stop taking work, encode what is queued, join the thread (up to ``timeout`` s), fail the rest."""
        with self._cv:
            self._closed = True
            self._cv.notify_all()
        self._thread.join(timeout)
        with self._cv:
            left = list(self._queue)
            self._queue.clear()
            self._queued_faces = 0
        for job in left:
            if not job.future.done():
                job.future.set_exception(NotReady("the encoder shut down", headers={"Retry-After": "5"}))
        if self._thread.is_alive():
            log.warning("the encoder thread did not stop within %.1f s", timeout)

    # ---- the encoder thread ----------------------------------------------------------------------------

    def _next_batch(self) -> list[_Job] | None:
        """Block until a batch is due; None when closed and drained."""
        with self._cv:
            while True:
                if not self._queue or self._busy:
                    if self._closed and not self._queue:
                        return None
                    self._cv.wait()
                    continue
                if self._closed or self._queued_faces >= self.max_batch or self._producers <= self._blocked:
                    break
                remaining = self._queue[0].queued_at + self.max_wait_s - time.monotonic()
                if remaining <= 0:
                    break
                self._cv.wait(remaining)
            batch: list[_Job] = []
            faces = 0
            while self._queue and (not batch or faces + len(self._queue[0].crops) <= self.max_batch):
                job = self._queue.popleft()
                batch.append(job)
                faces += len(job.crops)
            self._queued_faces -= faces
            self._busy = True
            return batch

    def _run(self) -> None:
        while (batch := self._next_batch()) is not None:
            try:
                self._encode_batch(batch)
            finally:
                with self._cv:
                    self._busy = False
                    self._cv.notify_all()

    def _encode_batch(self, batch: list[_Job]) -> None:
        sizes = [len(job.crops) for job in batch]
        start = time.perf_counter()
        try:
            crops = batch[0].crops if len(batch) == 1 else np.concatenate([job.crops for job in batch])
            out = self._encode(crops)
            if len(out) != sum(sizes):
                raise RuntimeError(f"the encoder returned {len(out)} rows for {sum(sizes)} crops")
        except BaseException as exc:  # handed to this batch's callers; the thread lives on
            for job in batch:
                job.future.set_exception(exc)
            return
        seconds = time.perf_counter() - start
        offset = 0
        for job, size in zip(batch, sizes, strict=True):
            job.future.set_result(np.array(out[offset : offset + size], copy=True))
            offset += size
        self._observe(sum(sizes), len(batch), seconds)

    def _observe(self, faces: int, requests: int, seconds: float) -> None:
        if self._on_batch is not None:
            try:
                self._on_batch(faces, requests, seconds)
            except Exception:  # a metrics failure must not stop the encoder
                log.exception("batch observer failed")


class BatchingEncoder:
    """An :class:`embeddings.encoders.Encoder` whose ``encode`` goes through ``batcher``; the rest is
    ``encoder``'s (the one the batcher's thread runs). Handed to the analyzer as its encoder."""

    def __init__(self, encoder: Encoder, batcher: MicroBatcher) -> None:
        self.inner = encoder
        self.batcher = batcher

    @property
    def precision(self) -> str:
        return self.inner.precision

    @property
    def flip_tta(self) -> bool:
        return self.inner.flip_tta

    @flip_tta.setter
    def flip_tta(self, value: bool) -> None:
        self.inner.flip_tta = value

    def encode(self, crops: Crops) -> Embeddings:
        return self.batcher.encode(crops)

    def warm_up(self) -> None:
        self.inner.warm_up()
