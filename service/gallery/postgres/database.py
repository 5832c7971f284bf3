"""Opening a PostgreSQL gallery database: check the connection (clear errors for a bad configuration), apply the
schema migrations, then open the connection pool and the gallery on it. The key store, audit log and rate limit
that share the pool are the service's (:mod:`service.pgstores`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool

from service.gallery.postgres import schema
from service.gallery.postgres.connection import PoolOptions, connect_checked, location, open_pool
from service.gallery.postgres.errors import DatabaseConfigError
from service.gallery.postgres.gallery import PostgresGallery
from service.gallery.postgres.vectors import VectorOptions


@dataclass
class PostgresDatabase:
    """One open database: its pool and the gallery on it (closing the gallery closes the pool)."""

    url: str = field(repr=False)
    pool: ConnectionPool[psycopg.Connection[Any]] = field(repr=False)
    gallery: PostgresGallery

    @property
    def location(self) -> str:
        """``host:port/database`` (no credentials)."""
        return location(self.url)

    def close(self) -> None:
        self.gallery.close()


def prepare_database(url: str, *, connect_timeout_s: int = 5) -> int:
    """Check that ``url`` is usable and bring its schema up to date; returns the schema version found before.
    Raises :class:`DatabaseConfigError` (or :class:`SchemaTooNew`) with a message naming host:port/database."""
    conn = connect_checked(url, connect_timeout_s=connect_timeout_s, autocommit=True)
    try:
        return schema.migrate(conn, url)
    except psycopg.errors.InsufficientPrivilege as e:
        raise DatabaseConfigError(
            f"the user {conn.info.user!r} may not create facerec's tables in {location(url)} "
            f"({str(e).splitlines()[0]}); make it the database's owner or grant it CREATE on schema public"
        ) from None
    except psycopg.errors.ReadOnlySqlTransaction:
        raise DatabaseConfigError(
            f"PostgreSQL at {location(url)} is read-only (a standby?) and facerec's schema there is missing or "
            "older than this code; point FACEREC_DATABASE_URL at the primary (or start once on it)"
        ) from None
    except psycopg.OperationalError as e:
        raise DatabaseConfigError(
            f"PostgreSQL at {location(url)} went away while facerec prepared its schema: {str(e).splitlines()[0]}"
        ) from None
    finally:
        conn.close()


def open_database(
    url: str, *, pool: PoolOptions | None = None, vectors: VectorOptions | None = None
) -> PostgresDatabase:
    """Prepare the database (see :func:`prepare_database`) and open the gallery on a new pool."""
    pool_opts = pool or PoolOptions()
    vec_opts = vectors or VectorOptions()
    prepare_database(url, connect_timeout_s=pool_opts.connect_timeout_s)
    conns = open_pool(url, pool_opts, session={"hnsw.ef_search": str(vec_opts.ef_search)})
    try:
        gallery = PostgresGallery(conns, options=vec_opts)
    except BaseException:
        conns.close()
        raise
    return PostgresDatabase(url, conns, gallery)
