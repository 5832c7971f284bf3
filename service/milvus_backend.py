"""The PostgreSQL backend with Milvus as its vector engine (``FACEREC_VECTOR_BACKEND=milvus``), built from
:class:`Settings`: the gallery from :mod:`service.gallery.milvus`, the key store, audit log and rate limit from
:mod:`service.pgstores` on the same pool."""

from __future__ import annotations

from service.config import Settings
from service.gallery.milvus import MilvusOptions, open_milvus
from service.gallery.postgres import PoolOptions
from service.gallery.postgres.errors import DatabaseConfigError
from service.pgstores import PostgresAuditLog, PostgresBackend, PostgresKeyStore


def milvus_options(settings: Settings) -> MilvusOptions:
    """The ``FACEREC_MILVUS_*`` settings; :class:`DatabaseConfigError` without a URI."""
    if not settings.milvus_uri:
        raise DatabaseConfigError(
            "FACEREC_VECTOR_BACKEND=milvus needs FACEREC_MILVUS_URI (http://host:19530, or a milvus-lite .db path)"
        )
    return MilvusOptions(
        uri=settings.milvus_uri,
        token=settings.milvus_token,
        index_type=settings.milvus_index.upper(),
        timeout_s=settings.milvus_timeout_s,
        ef=settings.milvus_ef,
        compact_delay_s=settings.milvus_compact_delay_s,
    )


def open_milvus_backend(settings: Settings, *, pool: PoolOptions | None = None, sync: bool = True) -> PostgresBackend:
    """:func:`open_postgres` with Milvus as the vector engine (``FACEREC_VECTOR_BACKEND=milvus``); ``sync=False``
    for one-shot commands (no background drain / periodic reconcile thread)."""
    assert settings.database_url
    database = open_milvus(
        settings.database_url,
        milvus_options(settings),
        pool=pool
        or PoolOptions(
            min_size=min(2, settings.db_pool_size), max_size=settings.db_pool_size, timeout_s=settings.db_timeout_s
        ),
        sync_interval_s=1.0 if sync else 0.0,
        reconcile_interval_s=settings.milvus_reconcile_interval_s if sync else 0.0,
    )
    return PostgresBackend(database, PostgresKeyStore(database.pool), PostgresAuditLog(database.pool))
