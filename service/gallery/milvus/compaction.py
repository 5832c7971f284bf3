"""Erased vectors leave Milvus's segments. Milvus keeps a deleted row in its sealed segment (the delete is a delta
log beside it) until a compaction rewrites the segment, and its automatic compaction runs only when enough of a
segment is deleted, so the embedding of one erased person among many faces would stay on the server's disk
indefinitely.

When a drain deletes vectors of a model it records the time in ``vector_compaction`` (:mod:`.outbox`, same
transaction). A replica's compaction thread waits ``delay_s`` after the first such erasure (erasures in that window
share one compaction), then flushes the collection (its deletes reach the sealed segments), asks Milvus to compact
it, polls the job until it completes and clears the erasures it covered. One replica per model at a time (a lease
in the row); Milvus refusing or down: retried ``retry_s`` later. Nothing here fails a request, and a replica that
dies mid-job leaves the row to the next lease. Milvus deletes the replaced segment's files at its next garbage
collection (``dataCoord.gc``, docs/MILVUS.md).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg

from service.gallery.milvus.engine import MilvusEngine

log = logging.getLogger("facerec.gallery.milvus")

FLUSH_TIMEOUT_S = 60.0
"""Longest the flush before a compaction may take (it waits until the collection's segments are sealed)."""

_CLAIM = """
WITH t AS (SELECT extract(epoch FROM clock_timestamp()) AS now),
due AS (
    SELECT c.model_id FROM vector_compaction c, t
    WHERE c.first_erased <= t.now - %(delay)s AND c.retry_at <= t.now
    ORDER BY c.first_erased LIMIT 1 FOR UPDATE OF c SKIP LOCKED
)
UPDATE vector_compaction c SET retry_at = t.now + %(lease)s FROM due, t WHERE c.model_id = due.model_id
RETURNING c.model_id, t.now
"""
"""Take the lease of the model whose erasures waited longest past ``delay`` seconds; its model id and PostgreSQL's
clock now (the erasures recorded before it are the ones the flush that follows covers)."""

_DONE = """
UPDATE vector_compaction SET
    first_erased = CASE WHEN last_erased < %(started)s THEN NULL ELSE %(started)s END,
    last_erased = CASE WHEN last_erased < %(started)s THEN NULL ELSE last_erased END,
    retry_at = 0
WHERE model_id = %(m)s
"""
"""A compaction completed: the erasures recorded before its flush are gone from the segments; later ones wait for
the next compaction."""

_RETRY = "UPDATE vector_compaction SET retry_at = extract(epoch FROM clock_timestamp()) + %(s)s WHERE model_id = %(m)s"

Connect = Callable[[], contextlib.AbstractContextManager[psycopg.Connection[Any]]]


@dataclass(frozen=True, slots=True)
class Job:
    """A compaction Milvus is running for this replica."""

    model_id: str
    job_id: int
    started: float
    """PostgreSQL's clock when the lease was taken, seconds since the epoch."""
    deadline: float
    """``time.monotonic()`` after which the job is given up (the lease expires then too)."""


class Compactor:
    """Requests and follows the compactions that remove erased vectors (one job at a time per replica)."""

    def __init__(
        self,
        connect: Connect,
        engine: MilvusEngine,
        *,
        delay_s: float,
        retry_s: float = 60.0,
        job_timeout_s: float = 3600.0,
    ) -> None:
        self._connect = connect
        self.engine = engine
        self.delay_s = delay_s
        """Seconds from the first erasure not yet compacted to the compaction request."""
        self.retry_s = retry_s
        """Seconds before a failed request is tried again (by any replica)."""
        self.job_timeout_s = job_timeout_s
        """Seconds a requested compaction may run before it is requested again."""
        self.job: Job | None = None

    def run_once(self) -> str | None:
        """One step: poll the job in flight, else request the compaction of a model that is due. Returns
        ``"requested"``, ``"running"``, ``"completed"``, ``"failed"`` (retried later) or None (nothing due)."""
        if self.engine.options.lite:
            return None  # milvus-lite: no segments on a server to compact
        if self.job is not None:
            return self._poll(self.job)
        with self._connect() as conn:
            row = conn.execute(_CLAIM, {"delay": self.delay_s, "lease": self.job_timeout_s}).fetchone()
        if row is None:
            return None
        model_id, started = str(row[0]), float(row[1])
        try:
            job_id = self._request(model_id)
        except Exception as e:
            return self._failed(model_id, "request", e)
        if job_id is None:  # no collection: nothing of it left in Milvus
            self._done(model_id, started)
            return "completed"
        self.job = Job(model_id, job_id, started, time.monotonic() + self.job_timeout_s)
        log.info("compaction %d of the vectors erased from %s requested", job_id, self.engine.name(model_id))
        return "requested"

    def _request(self, model_id: str) -> int | None:
        """Flush the model's collection and ask Milvus to compact it; the job id (None: no collection)."""
        name = self.engine.name(model_id)
        client = self.engine.client()
        t = self.engine.options.timeout_s
        if not client.has_collection(name, timeout=t):
            return None
        client.flush(name, timeout=max(t, FLUSH_TIMEOUT_S))
        return int(client.compact(name, timeout=t))

    def _poll(self, job: Job) -> str:
        try:
            state = str(self.engine.client().get_compaction_state(job.job_id, timeout=self.engine.options.timeout_s))
        except Exception as e:
            if time.monotonic() < job.deadline:
                return "running"  # asked again on the next step; the lease holds
            self.job = None
            return self._failed(job.model_id, "state", e)
        if state == "Completed":
            self.job = None
            self._done(job.model_id, job.started)
            log.info(
                "compaction %d completed: erased vectors removed from %s", job.job_id, self.engine.name(job.model_id)
            )
            return "completed"
        if time.monotonic() >= job.deadline:
            self.job = None
            return self._failed(job.model_id, "wait", TimeoutError(f"compaction {job.job_id} still {state}"))
        return "running"

    def _done(self, model_id: str, started: float) -> None:
        with self._connect() as conn:
            conn.execute(_DONE, {"m": model_id, "started": started})

    def _failed(self, model_id: str, step: str, e: Exception) -> str:
        reason = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
        log.warning(
            "compaction of %s (%s) failed, retried in %.0f s: %s",
            self.engine.name(model_id),
            step,
            self.retry_s,
            reason,
        )
        with contextlib.suppress(Exception), self._connect() as conn:  # PostgreSQL away: the lease expires anyway
            conn.execute(_RETRY, {"m": model_id, "s": self.retry_s})
        return "failed"
