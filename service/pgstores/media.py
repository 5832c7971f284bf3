"""Video jobs and the registry of live streams in PostgreSQL, shared by every replica of the database.

- **Video jobs** (``video_jobs``): any replica answers ``GET``/``DELETE /v1/videos/{id}`` and lists every job.
  An upload is a file in the receiving replica's data dir, so a job is processed by that replica only (its
  ``owner``, :func:`replica_id` of the data dir): its runner picks up and, after a restart, requeues only its own
  jobs. A job whose replica never comes back stays ``queued``.
- **Streams** (``streams`` + ``stream_leases``): one registry; each stream is read by exactly one replica, the one
  holding its lease. Every replica's :class:`~service.streams.manager.StreamManager` renews its leases every
  few seconds (:meth:`PostgresStreamStore.claim`, timed by the database's clock) and takes any stream whose lease
  expired, so when a replica dies its streams move to the others within the lease time. The holder publishes the
  stream's health in the lease row, so any replica can show it.
"""

from __future__ import annotations

import functools
import json
import os
import uuid
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from service.config import DATA_DIR_MODE
from service.gallery.postgres import locks
from service.pgstores.pool import Pool, connection, reader, serialised
from service.sqlconn import SqlConn
from service.streams.store import StreamStore
from service.video.jobstore import JobStore

REPLICA_FILE = "replica.id"

LEASE_S = 15.0
"""A stream's lease lasts this long unless renewed (renewed every third of it)."""

_CLAIM = """
INSERT INTO stream_leases AS l (stream_id, owner, expires_at)
SELECT s.id, %(owner)s, extract(epoch FROM clock_timestamp()) + %(ttl)s FROM streams s WHERE s.id = ANY(%(ids)s)
ON CONFLICT (stream_id) DO UPDATE SET owner = excluded.owner, expires_at = excluded.expires_at
    WHERE l.owner = excluded.owner OR l.expires_at < extract(epoch FROM clock_timestamp())
RETURNING stream_id
"""
"""Take or renew the lease of each stream in ``ids`` that is unleased, ours, or expired; returns those held."""


def replica_id(data_dir: Path) -> str:
    """This data dir's replica id (``<data>/replica.id``, made on first use): the owner of the video uploads in
    it and of the stream leases its process holds; stable across restarts."""
    path = data_dir / REPLICA_FILE
    if not path.is_file():
        data_dir.mkdir(mode=DATA_DIR_MODE, parents=True, exist_ok=True)
        new_id = uuid.uuid4().hex
        tmp = path.with_suffix(f".{new_id}.tmp")
        tmp.write_text(new_id + "\n")
        try:  # whole, and the first writer wins: two first uses at once (threads, processes) agree on one id
            os.link(tmp, path)
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    return path.read_text().strip()


class PostgresJobStore(JobStore):
    """:class:`~service.video.jobstore.JobStore` on ``video_jobs``; this process runs the jobs of ``owner``."""

    table = "video_jobs"

    def __init__(self, pool: Pool, data_dir: Path, owner: str | Callable[[], str]) -> None:
        super().__init__(data_dir, owner)
        self._pool = pool

    def _conn(self) -> AbstractContextManager[SqlConn]:
        return reader(self._pool)


class PostgresStreamStore(StreamStore):
    """:class:`~service.streams.store.StreamStore` on ``streams``, with leases held by ``owner``."""

    shared = True

    def __init__(self, pool: Pool, owner: str | Callable[[], str], *, lease_s: float = LEASE_S) -> None:
        self._pool, self._owner, self.lease_s = pool, owner, lease_s

    @functools.cached_property
    def owner(self) -> str:
        """The lease holder, resolved on first use (listing or erasing streams never makes a replica id)."""
        return self._owner() if callable(self._owner) else self._owner

    def _conn(self) -> AbstractContextManager[SqlConn]:
        return reader(self._pool)

    def _writer(self) -> AbstractContextManager[SqlConn]:
        return serialised(self._pool, locks.STREAMS)

    def claim(self, stream_ids: Sequence[str], health: dict[str, dict[str, Any]]) -> set[str]:
        with connection(self._pool) as conn:
            rows = conn.execute(_CLAIM, {"owner": self.owner, "ttl": self.lease_s, "ids": list(stream_ids)})
            held = {r[0] for r in rows.fetchall()}
            for stream_id, h in health.items():
                if stream_id in held:
                    conn.execute(
                        "UPDATE stream_leases SET health = %s WHERE stream_id = %s AND owner = %s",
                        (json.dumps(h), stream_id, self.owner),
                    )
        return held

    def release(self, stream_ids: Sequence[str]) -> None:
        """Give up these leases now (a clean shutdown), so another replica takes the streams at once."""
        with connection(self._pool) as conn:
            conn.execute(
                "DELETE FROM stream_leases WHERE owner = %s AND stream_id = ANY(%s)", (self.owner, list(stream_ids))
            )

    def healths(self) -> dict[str, dict[str, Any]]:
        with connection(self._pool) as conn:
            rows = conn.execute(
                "SELECT stream_id, health FROM stream_leases "
                "WHERE health IS NOT NULL AND expires_at >= extract(epoch FROM clock_timestamp())"
            ).fetchall()
        return {r[0]: json.loads(r[1]) for r in rows}
