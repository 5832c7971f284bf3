"""The service's stores in PostgreSQL, on the gallery's pool, for replicas that share one database: API keys,
the audit log and the shared rate limit (:mod:`.accounts`), events and their webhook outbox (:mod:`.events`),
video jobs and the streams registry with its leases (:mod:`.media`), and the photo library (:mod:`.photos`).
:func:`open_postgres_backend` builds them all from :class:`Settings`."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path

from service.config import Settings
from service.gallery.postgres import PoolOptions, PostgresDatabase, PostgresGallery, VectorOptions, open_database
from service.gallery.postgres.vectors import HnswBuild
from service.pgstores.accounts import PostgresAuditLog, PostgresKeyStore, PostgresRateLimiter
from service.pgstores.events import PostgresEventStore
from service.pgstores.media import PostgresJobStore, PostgresStreamStore, replica_id
from service.pgstores.photos import PostgresPhotoStore
from service.pgstores.pool import Pool
from service.stores import MediaStores

__all__ = [
    "PostgresAuditLog",
    "PostgresBackend",
    "PostgresKeyStore",
    "PostgresRateLimiter",
    "open_postgres",
    "open_postgres_backend",
]


@dataclass
class PostgresBackend:
    """Everything a replica keeps in PostgreSQL, on the pool of ``database`` (its gallery searches through pgvector
    or Milvus): keys, audit log; :meth:`rate_limiter` and :meth:`media_stores` make the rest."""

    database: PostgresDatabase
    keys: PostgresKeyStore
    audit: PostgresAuditLog
    gallery: PostgresGallery = field(init=False)
    pool: Pool = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.gallery, self.pool = self.database.gallery, self.database.pool

    @property
    def location(self) -> str:
        """``host:port/database`` (no credentials)."""
        return self.database.location

    def rate_limiter(self, *, per_minute: float, burst: int) -> PostgresRateLimiter:
        """The rate limit shared by every replica of this database."""
        return PostgresRateLimiter(self.pool, per_minute=per_minute, burst=burst)

    def media_stores(self, data_dir: Path) -> MediaStores:
        """Events, video jobs, streams and the photo library in the database; ``data_dir`` holds this replica's
        id (:func:`replica_id`) and its video uploads."""
        pool, owner = self.pool, functools.partial(replica_id, data_dir)  # made when a job or lease needs it
        return MediaStores(
            events=PostgresEventStore(pool),
            jobs=PostgresJobStore(pool, data_dir, owner),
            streams=PostgresStreamStore(pool, owner),
            photos=PostgresPhotoStore(pool),
        )

    def close(self) -> None:
        self.database.close()


def open_postgres(
    url: str, *, pool: PoolOptions | None = None, vectors: VectorOptions | None = None
) -> PostgresBackend:
    """Open the database at ``url`` (checked, migrated: :func:`service.gallery.postgres.open_database`) with the
    key store and audit log on its pool."""
    database = open_database(url, pool=pool, vectors=vectors)
    return PostgresBackend(database, PostgresKeyStore(database.pool), PostgresAuditLog(database.pool))


def open_postgres_backend(settings: Settings) -> PostgresBackend:
    """The PostgreSQL backend ``settings`` select (``FACEREC_DATABASE_URL``, pool size, timeout, ef_search);
    :class:`service.gallery.postgres.DatabaseConfigError` says what is wrong with a bad configuration."""
    assert settings.database_url is not None
    return open_postgres(
        settings.database_url,
        pool=PoolOptions(
            min_size=min(2, settings.db_pool_size), max_size=settings.db_pool_size, timeout_s=settings.db_timeout_s
        ),
        vectors=VectorOptions(
            ef_search=settings.pgvector_ef_search,
            build=HnswBuild(m=settings.pgvector_hnsw_m, ef_construction=settings.pgvector_ef_construction),
        ),
    )
