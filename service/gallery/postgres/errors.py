"""Errors of the PostgreSQL backend at start-up (bad configuration), and the mapping of psycopg's run-time errors
to the gallery's :class:`StorageUnavailable` / :class:`StorageFull` (HTTP 503 / 507).

Messages name the server as ``host:port/database`` and never carry the password.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

import psycopg
from psycopg_pool import PoolTimeout

from service.gallery.errors import GalleryError, StorageFull, StorageUnavailable

log = logging.getLogger("facerec.gallery.postgres")


class DatabaseConfigError(GalleryError):
    """The database in ``FACEREC_DATABASE_URL`` cannot be used: unreachable, wrong credentials, no such database,
    no pgvector, or a schema newer than this code. Raised at start; the message says what to fix."""

    code = "database_config"


class SchemaTooNew(DatabaseConfigError):
    """The database's facerec schema was written by a newer facerec; this code refuses to touch it."""

    code = "schema_too_new"


UNAVAILABLE_MSG = "the gallery database is unavailable ({why}); nothing was stored. Retry shortly"
FULL_MSG = "the gallery database is out of disk space; nothing was stored. Free space on the database server"

_DISK_FULL = "53100"
_OUT_OF_MEMORY = "53200"
_READ_ONLY = "25006"
_ADMIN_SHUTDOWN = ("57P01", "57P02", "57P03")  # admin/crash shutdown, cannot connect now (starting up)


def runtime_error(exc: BaseException) -> GalleryError | None:
    """The gallery error a failed database call maps to, or ``None`` for anything else (a bug: 500).

    Connection loss, server shut down, pool exhausted/timeout, read-only server -> :class:`StorageUnavailable`;
    disk full -> :class:`StorageFull`. Program limits exceeded (SQLSTATE class 54, an ``OperationalError`` in
    psycopg) are not an outage: ``None``."""
    if isinstance(exc, GalleryError):
        return exc
    if isinstance(exc, PoolTimeout):
        return StorageUnavailable(UNAVAILABLE_MSG.format(why="no connection within the timeout"))
    if isinstance(exc, psycopg.Error):
        state = getattr(exc, "sqlstate", None)
        if state == _DISK_FULL:
            return StorageFull(FULL_MSG)
        if state == _READ_ONLY:
            return StorageUnavailable(UNAVAILABLE_MSG.format(why="the server is read-only"))
        if state in _ADMIN_SHUTDOWN or state == _OUT_OF_MEMORY:
            return StorageUnavailable(UNAVAILABLE_MSG.format(why="the server is shutting down or starting"))
        if state is not None and state.startswith("54"):
            return None  # a statement over a PostgreSQL limit (e.g. an index row too large): a bug, not an outage
        if isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError):
            return StorageUnavailable(UNAVAILABLE_MSG.format(why="connection lost"))
    return None


@contextlib.contextmanager
def db_errors() -> Iterator[None]:
    """Re-raise a database failure of the block as :class:`StorageUnavailable` / :class:`StorageFull`; gallery
    errors and everything else pass unchanged."""
    try:
        yield
    except (psycopg.Error, PoolTimeout) as e:
        err = runtime_error(e)
        if err is None:
            raise
        log.warning("gallery database call failed: %s: %s", type(e).__name__, str(e).splitlines()[0] if str(e) else "")
        raise err from e
