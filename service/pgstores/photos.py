"""The photo library's store in PostgreSQL: the SQL of :class:`~service.photos.sqlstore.SqlPhotoStore` on the
backend's pool, so photos, their faces, clusters, names and cannot-link constraints indexed through one replica
are the same on every replica (each replica's FAISS search index over them is a cache that
:class:`~service.photos.library.PhotoLibrary` brings up to date from the store before it searches).

Write transactions take a transaction-scoped advisory lock: photo writes are serialised across replicas as the
embedded store's ``BEGIN IMMEDIATE`` serialises them in one process, so observation ids grow in commit order
(a replica catching up on ids above the last it saw misses none). The background maintenance (retention,
re-clustering) runs on one replica at a time (:meth:`PostgresPhotoStore.maintenance_turn`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from service.gallery.postgres import locks
from service.pgstores.pool import SerialisedStore, connection
from service.photos.sqlstore import SqlPhotoStore

PHOTOS_LOCK = locks.PHOTOS
MAINTENANCE_LOCK = locks.PHOTOS_MAINTENANCE


class PostgresPhotoStore(SerialisedStore, SqlPhotoStore):
    """:class:`~service.photos.base.PhotoStore` on the ``photos`` / ``observations`` / ``cannot_link`` /
    ``counters`` tables; thread-safe (one pooled connection per call)."""

    lock_key = PHOTOS_LOCK

    @contextmanager
    def naming_lock(self) -> Iterator[None]:
        """A session advisory lock on a connection of its own (the naming's statements use others)."""
        with connection(self._pool) as conn, locks.held(conn, locks.PHOTO_NAMING):
            yield

    @contextmanager
    def maintenance_turn(self) -> Iterator[bool]:
        """True for one replica at a time (a transaction-scoped advisory lock, tried without waiting)."""
        with connection(self._pool) as conn, conn.transaction():
            row = conn.execute("SELECT pg_try_advisory_xact_lock(%s)", (MAINTENANCE_LOCK,)).fetchone()
            yield bool(row and row[0])
