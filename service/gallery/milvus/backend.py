"""Opening the PostgreSQL + Milvus backend: the PostgreSQL backend (schema, pool, keys, audit log, rate limit)
with :class:`MilvusGallery` as its gallery. Milvus need not be up at start: the gallery connects on first use,
answers 503 ``vector_index_unavailable`` while it is down and resumes by itself."""

from __future__ import annotations

from service.config import Settings
from service.gallery.milvus.engine import MilvusOptions
from service.gallery.milvus.gallery import MilvusGallery
from service.gallery.postgres.accounts import PostgresAuditLog, PostgresKeyStore
from service.gallery.postgres.backend import PostgresBackend, prepare_database
from service.gallery.postgres.connection import PoolOptions, open_pool
from service.gallery.postgres.errors import DatabaseConfigError
from service.gallery.postgres.vectors import VectorOptions


def milvus_options(settings: Settings) -> MilvusOptions:
    """The Milvus settings of ``settings`` (``FACEREC_MILVUS_*``); DatabaseConfigError without a URI."""
    if not settings.milvus_uri:
        raise DatabaseConfigError(
            "FACEREC_VECTOR_BACKEND=milvus needs FACEREC_MILVUS_URI (http://host:19530, or a milvus-lite .db path)"
        )
    return MilvusOptions(
        uri=settings.milvus_uri,
        token=settings.milvus_token,
        index_type=settings.milvus_index.upper(),
        timeout_s=settings.milvus_timeout_s,
    )


def open_milvus(
    url: str,
    milvus: MilvusOptions,
    *,
    pool: PoolOptions | None = None,
    vectors: VectorOptions | None = None,
    sync_interval_s: float = 1.0,
    reconcile_interval_s: float = 0.0,
) -> PostgresBackend:
    """Prepare the database, open a pool and return the backend whose gallery searches through Milvus."""
    pool_opts = pool or PoolOptions()
    prepare_database(url, connect_timeout_s=pool_opts.connect_timeout_s)
    conns = open_pool(url, pool_opts)
    try:
        gallery = MilvusGallery(
            conns,
            milvus,
            options=vectors,
            sync_interval_s=sync_interval_s,
            reconcile_interval_s=reconcile_interval_s,
        )
    except BaseException:
        conns.close()
        raise
    return PostgresBackend(url, conns, gallery, PostgresKeyStore(conns), PostgresAuditLog(conns))
