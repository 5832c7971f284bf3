"""Every PostgreSQL advisory lock key facerec uses, in one place so that no two jobs share one by accident.

One-key locks are ``'facerec'`` followed by a byte (``0x66616365_726563NN``); the two-key locks (a class and
``hashtext`` of an id) live in a separate key space that never collides with the one-key locks. A key must not
change once released: replicas of two versions side by side would stop excluding each other.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import psycopg

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
def held(conn: psycopg.Connection[Any], key: int, name: str | None = None) -> Iterator[None]:
    """A session advisory lock on ``conn`` for the block: one-key ``key``, or two-key ``(key, hashtext(name))``.
    Waits for it; released when the block ends, or by the server when the session dies."""
    target, args = ("%s", (key,)) if name is None else ("%s, hashtext(%s)", (key, name))
    conn.execute(f"SELECT pg_advisory_lock({target})", args)
    try:
        yield
    finally:
        with contextlib.suppress(psycopg.Error):  # a broken session has released it already
            conn.execute(f"SELECT pg_advisory_unlock({target})", args)
