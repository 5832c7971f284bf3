"""The connection pool the PostgreSQL stores share with the gallery, and borrowing one connection from it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool

from service.gallery.postgres.errors import db_errors
from service.sqlconn import PgConn, SqlConn

Pool = ConnectionPool[psycopg.Connection[Any]]


@contextmanager
def connection(pool: Pool) -> Iterator[psycopg.Connection[Any]]:
    """A connection for one transaction (committed when the block ends, rolled back on an exception); database
    failures raise the gallery's ``StorageUnavailable`` (503)."""
    with db_errors(), pool.connection() as conn:
        yield conn


@contextmanager
def serialised(pool: Pool, key: int) -> Iterator[SqlConn]:
    """One write transaction holding the advisory lock ``key`` until it ends (writers of that key take turns)."""
    with connection(pool) as conn, conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (key,))
        yield PgConn(conn)


@contextmanager
def reader(pool: Pool) -> Iterator[SqlConn]:
    """A connection for reads, seen as a :class:`SqlConn`."""
    with connection(pool) as conn:
        yield PgConn(conn)


class SerialisedStore:
    """The connections of a store on the pool whose write transactions take the advisory lock :attr:`lock_key`
    (writers of the store take turns across replicas, so its identity columns grow in commit order)."""

    lock_key: int

    def __init__(self, pool: Pool) -> None:
        self._pool = pool

    def transaction(self) -> AbstractContextManager[SqlConn]:
        return serialised(self._pool, self.lock_key)

    def reader(self) -> AbstractContextManager[SqlConn]:
        return reader(self._pool)
