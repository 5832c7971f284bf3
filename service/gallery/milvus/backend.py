"""Opening a PostgreSQL gallery database searched through Milvus: the PostgreSQL database (checked, migrated,
pooled) with :class:`MilvusGallery` as its gallery. Milvus need not be up at start: the gallery connects on first
use, answers 503 ``vector_index_unavailable`` while Milvus is down and resumes by itself. (The key store, audit log
and rate limit on the same pool are the service's, :func:`service.pgstores.open_milvus_backend`.)"""

from __future__ import annotations

from service.gallery.milvus.gallery import MilvusGallery
from service.gallery.milvus.options import MilvusOptions
from service.gallery.postgres.connection import PoolOptions, open_pool
from service.gallery.postgres.database import PostgresDatabase, prepare_database
from service.gallery.postgres.vectors import VectorOptions


def open_milvus(
    url: str,
    milvus: MilvusOptions,
    *,
    pool: PoolOptions | None = None,
    vectors: VectorOptions | None = None,
    sync_interval_s: float = 1.0,
    reconcile_interval_s: float = 0.0,
) -> PostgresDatabase:
    """Prepare the database, open a pool and return it with a gallery that searches through Milvus."""
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
    return PostgresDatabase(url, conns, gallery)
