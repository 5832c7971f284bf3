"""Cross-thread batching of network calls: concurrent callers of the same network on the same input shapes share
one call.

Callers (request threads running their own detection cascades) call :meth:`CallBatcher.call` with a batch for a
named network (or :meth:`CallBatcher.call_parts` with several batches of different shapes that are run as one
job, e.g. every level of an image pyramid) and block until their rows come back. Network calls never overlap:

- a caller that finds no call running and nothing queued runs its call inline, in its own thread (a lone request
  waits for nothing and pays no thread hand-over);
- otherwise the job is queued; when the running call ends, the batcher's thread takes the oldest job and every
  other queued job for the same network and input shapes (up to ``max_batch`` samples), concatenates them part by
  part, runs ONE call and hands each caller its own rows. Batches form only from calls that queued up while
  another ran, so a call never waits for company that may not come.

The queue is bounded (``max_queue`` jobs): a call that would overflow it raises
:class:`embeddings.errors.Overloaded` (the service answers 429) and queues nothing. A network error reaches only
the callers of that batch.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from embeddings.errors import Overloaded

Batch = npt.NDArray[np.float32]
Outputs = list[npt.NDArray[np.float32]]
RunFn = Callable[[str, list[Batch]], list[Outputs]]
"""``run(network name, parts) -> outputs of each part``: part ``k`` is a batch ``(n, ...)`` and its outputs each
have ``n`` rows (all parts have the same ``n``); called from one thread at a time."""


@dataclass(slots=True)
class _Job:
    name: str
    parts: list[Batch]
    future: Future[list[Outputs]] = field(default_factory=Future)

    @property
    def key(self) -> tuple[str, tuple[tuple[int, ...], ...]]:
        return self.name, tuple(tuple(p.shape[1:]) for p in self.parts)

    def __len__(self) -> int:
        return len(self.parts[0])


@dataclass(slots=True)
class CallStats:
    """Counters since start: network ``calls`` run, caller ``jobs`` served (jobs > calls when calls were shared),
    ``samples`` processed, ``seconds`` spent in calls, ``rejected`` calls (queue full)."""

    calls: int = 0
    jobs: int = 0
    samples: int = 0
    seconds: float = 0.0
    rejected: int = 0


class CallBatcher:
    """A bounded queue of network calls in front of one network at a time; thread-safe (module docstring)."""

    def __init__(self, run: RunFn, *, max_batch: int = 1024, max_queue: int = 256, name: str = "facerec-mtcnn"):
        if max_batch < 1 or max_queue < 1:
            raise ValueError("max_batch and max_queue must be >= 1")
        self._run = run
        self.max_batch = max_batch
        self.max_queue = max_queue
        self.stats = CallStats()
        self._cv = threading.Condition()
        self._queue: deque[_Job] = deque()
        self._busy = False
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    @property
    def queued(self) -> int:
        """Jobs waiting (not counting the call running)."""
        return len(self._queue)

    def call(self, name: str, batch: Batch) -> Outputs:
        """Run network ``name`` on ``batch``, possibly together with other callers' batches; blocks until done.

        Raises :class:`Overloaded` (nothing queued) when ``max_queue`` jobs are already waiting, ``RuntimeError``
        once closed, or whatever the network raised for this batch.
        """
        return self.call_parts(name, [batch])[0]

    def call_parts(self, name: str, parts: list[Batch]) -> list[Outputs]:
        """As :meth:`call` for one job of several batches with the same number of rows (the outputs of each);
        jobs are shared only with jobs of the same network and the same part shapes."""
        if not parts or len({len(p) for p in parts}) != 1:
            raise ValueError("call_parts needs one or more batches with the same number of rows")
        job = _Job(name, [np.ascontiguousarray(p, dtype=np.float32) for p in parts])
        with self._cv:
            if self._closed:
                raise RuntimeError("the detector is closed")
            inline = not self._busy and not self._queue
            if inline:
                self._busy = True
            elif len(self._queue) >= self.max_queue:
                self.stats.rejected += 1
                raise Overloaded(f"{len(self._queue)} detector calls are already waiting; retry shortly")
            else:
                self._queue.append(job)
                self._cv.notify_all()
        if inline:
            self._execute([job])
        return job.future.result()

    def close(self, timeout: float = 10.0) -> None:
        """Run what is queued, refuse new calls and join the thread."""
        with self._cv:
            self._closed = True
            self._cv.notify_all()
        self._thread.join(timeout)

    def _next(self) -> list[_Job] | None:
        with self._cv:
            while self._busy or not self._queue:
                if self._closed and not self._queue:
                    return None
                self._cv.wait()
            key = self._queue[0].key
            jobs: list[_Job] = []
            samples = 0
            rest: deque[_Job] = deque()
            for job in self._queue:
                if job.key == key and (not jobs or samples + len(job) <= self.max_batch):
                    jobs.append(job)
                    samples += len(job)
                else:
                    rest.append(job)
            self._queue = rest
            self._busy = True
            return jobs

    def _loop(self) -> None:
        while (jobs := self._next()) is not None:
            self._execute(jobs)

    @contextmanager
    def _holding(self) -> Iterator[None]:
        """Marks the end of a call the caller started by setting ``_busy``: frees the batcher for the next."""
        try:
            yield
        finally:
            with self._cv:
                self._busy = False
                self._cv.notify_all()

    def _execute(self, jobs: list[_Job]) -> None:
        """Run ``jobs`` as one network call and settle their futures (a failure goes to each of them)."""
        with self._holding():
            start = time.perf_counter()
            try:
                outputs = self._run(jobs[0].name, _joined(jobs))
                seconds = time.perf_counter() - start
            except BaseException as exc:  # handed to this batch's callers; the thread lives on
                _fail(jobs, exc)
                return
            end = 0
            for job in jobs:
                begin, end = end, end + len(job)
                job.future.set_result([[out[begin:end] for out in part] for part in outputs])
            with self._cv:
                self.stats.calls += 1
                self.stats.jobs += len(jobs)
                self.stats.samples += end
                self.stats.seconds += seconds


def _joined(jobs: list[_Job]) -> list[Batch]:
    """The jobs' batches concatenated part by part (one job's parts as they are)."""
    if len(jobs) == 1:
        return jobs[0].parts
    return [np.concatenate(same) for same in zip(*(job.parts for job in jobs), strict=True)]


def _fail(jobs: list[_Job], exc: BaseException) -> None:
    """Hand a call's failure to each of its callers."""
    for job in jobs:
        job.future.set_exception(exc)
