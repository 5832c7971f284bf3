"""Every PostgreSQL advisory lock key facerec uses, in one place so that no two jobs share one by accident.

One-key locks are ``'facerec'`` followed by a byte (``0x66616365_726563NN``); the two-key locks (a class and
``hashtext`` of an id) live in a separate key space that never collides with the one-key locks. A key must not
change once released: replicas of two versions side by side would stop excluding each other.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any

import psycopg

from service.gallery.errors import StorageUnavailable

MIGRATION = 0x66616365_72656301
"""Held (transaction) while the schema is migrated."""
OUTBOX_DRAIN = 0x66616365_72656302
"""Milvus backend: held (transaction) while the outbox is drained into Milvus."""
PHOTOS = 0x66616365_72656303
"""Photo library: held (transaction) by every write, so observation ids grow in commit order."""
PHOTOS_MAINTENANCE = 0x66616365_72656304
"""Photo library: held (tried, transaction) by the replica running retention and re-clustering."""
OUTBOX_INSTALL = 0x66616365_72656305
"""Milvus backend: held (transaction) while the outbox tables are installed (until 2026-12-07 it shared 03 with
the photo library's writes)."""
MILVUS_RECONCILE = 0x66616365_72656306
"""Milvus backend: held (tried, session) by the replica reconciling Milvus with PostgreSQL (until 2026-12-07 it
shared 04 with the photo library's maintenance, which it then kept from running)."""
PHOTO_NAMING = 0x66616365_72656307
"""Photo library: held (session) for a whole cluster naming, and by the roll-forward of interrupted ones, so a
replica never completes another's naming still in progress, nor names a cluster another is naming."""
STREAMS = 0x66616365_72656308
"""Live streams: held (transaction) by a stream's creation, so that the count against ``FACEREC_STREAMS_MAX`` and
the insert are one turn across replicas."""
SUBJECT_WRITES = 0x66616365
"""Two-key class: ``(SUBJECT_WRITES, hashtext(subject id))`` serialises enrolments into one subject."""

ONE_KEY = (MIGRATION, OUTBOX_DRAIN, PHOTOS, PHOTOS_MAINTENANCE, OUTBOX_INSTALL, MILVUS_RECONCILE, PHOTO_NAMING, STREAMS)


@contextlib.contextmanager
def held(
    conn: psycopg.Connection[Any], key: int, name: str | None = None, *, wait_s: float | None = None
) -> Iterator[None]:
    """A session advisory lock on ``conn`` for the block: one-key ``key``, or two-key ``(key, hashtext(name))``.
    Waits for it (at most ``wait_s`` seconds when given: then :class:`StorageUnavailable`, the holder being a
    session that does not end, such as a replica frozen in the middle of its block); released when the block
    ends, or by the server when the session dies."""
    target, args = ("%s", (key,)) if name is None else ("%s, hashtext(%s)", (key, name))
    if wait_s is None:
        conn.execute(f"SELECT pg_advisory_lock({target})", args)
    else:
        _take_within(conn, target, args, wait_s)
    try:
        yield
    finally:
        with contextlib.suppress(psycopg.Error):  # a broken session has released it already
            conn.execute(f"SELECT pg_advisory_unlock({target})", args)


def _take_within(conn: psycopg.Connection[Any], target: str, args: tuple[object, ...], wait_s: float) -> None:
    """Try the lock until it is granted, pausing 10 ms doubling to 100 ms; StorageUnavailable after ``wait_s``."""
    deadline, pause = time.monotonic() + wait_s, 0.01
    while not _granted(conn.execute(f"SELECT pg_try_advisory_lock({target})", args).fetchone()):
        if time.monotonic() >= deadline:
            raise StorageUnavailable(
                f"a lock this write needs stayed held by another connection for {wait_s:g} s (another replica's "
                "write to the same subject); nothing was stored. Retry shortly"
            )
        time.sleep(pause)
        pause = min(2 * pause, 0.1)


def _granted(row: tuple[Any, ...] | None) -> bool:
    return bool(row and row[0])
