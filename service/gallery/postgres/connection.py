"""Connecting to PostgreSQL: the start-up check that turns a bad ``FACEREC_DATABASE_URL`` into one clear sentence,
and the connection pool every request borrows from.

The pool checks a connection before lending it (one round trip, answered within ``timeout_s``), so connections
broken by a server restart, or held by a server that stopped answering, are replaced instead of failing or hanging
a request; while the server is down, borrowing times out after ``timeout_s`` and the request answers 503
``storage_unavailable``. The pool reconnects by itself when the server is back.
"""

from __future__ import annotations

import re
import select
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg
from pgvector.psycopg import register_vector
from psycopg import pq
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import ConnectionPool, PoolTimeout

from service.gallery.postgres.errors import DatabaseConfigError


@dataclass(frozen=True, slots=True)
class PoolOptions:
    """Connection pool sizing and timeouts (seconds)."""

    min_size: int = 2
    max_size: int = 10
    timeout_s: float = 5.0
    """How long a request waits for a connection (server down: then 503)."""
    connect_timeout_s: int = 5
    """libpq ``connect_timeout`` of each new connection."""


RECONNECT_TIMEOUT_S = 2.0
"""How long the pool retries a lost connection (backing off 1 s, 2 s, ...) before giving up on it; the next request
then starts a fresh attempt. Short, so that service resumes within about a second of the server coming back
instead of after a long back-off."""


def location(url: str) -> str:
    """``host:port/database`` of a connection URL or conninfo string, without user or password."""
    try:
        params = conninfo_to_dict(url)
    except psycopg.Error:
        return "<unparsable database URL>"
    host = str(params.get("host") or params.get("hostaddr") or "localhost")
    port = str(params.get("port") or "5432")
    db = str(params.get("dbname") or params.get("user") or "")
    return f"{host}:{port}/{db}"


def _scrub(text: str, url: str) -> str:
    """``text`` without the URL's password (libpq does not print it; this makes sure)."""
    try:
        pw = str(conninfo_to_dict(url).get("password") or "")
    except psycopg.Error:
        pw = ""
    text = re.sub(r"postgres(?:ql)?://[^\s'\"]+", "postgresql://...", text)
    return text.replace(pw, "***") if pw else text


def _reason(exc: psycopg.Error, url: str) -> str:
    """libpq's message reduced to its cause: the last meaningful line, without the 'connection failed' preamble."""
    text = _scrub(str(exc), url)
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    first = lines[0] if lines else type(exc).__name__
    return re.sub(r"^.*failed:\s*(FATAL:\s*)?", "", first) or first


def connect_checked(url: str, *, connect_timeout_s: int = 5, **kwargs: Any) -> psycopg.Connection[Any]:
    """Open one connection, or raise :class:`DatabaseConfigError` saying what is wrong and where (never the
    password): unparsable URL, host unreachable, authentication failed, database missing."""
    where = location(url)
    try:
        conninfo_to_dict(url)
    except psycopg.Error:
        raise DatabaseConfigError(
            "the database URL is not a valid PostgreSQL URL (expected postgresql://user:password@host:port/db)"
        ) from None
    try:
        return psycopg.connect(url, connect_timeout=connect_timeout_s, **kwargs)
    except psycopg.OperationalError as e:
        reason = _reason(e, url)
        low = reason.lower()
        if "password authentication failed" in low or "authentication failed" in low or "no password" in low:
            msg = f"PostgreSQL at {where} refused the credentials in FACEREC_DATABASE_URL ({reason})"
        elif "does not exist" in low and "database" in low:
            msg = f"PostgreSQL at {where}: the database does not exist ({reason}); create it or fix the URL"
        elif "role" in low and "does not exist" in low:
            msg = f"PostgreSQL at {where}: the user does not exist ({reason})"
        elif "pg_hba" in low or "no encryption" in low:
            msg = f"PostgreSQL at {where} does not accept this connection ({reason}); check pg_hba.conf / sslmode"
        else:
            msg = f"cannot reach PostgreSQL at {where}: {reason}"
        raise DatabaseConfigError(msg) from None


def _wait_socket(fd: int, deadline: float, *, write: bool = False) -> None:
    """Until the socket ``fd`` is readable (writable), or :class:`psycopg.OperationalError` at ``deadline``
    (monotonic seconds). ``poll``, not ``select``: a busy server's descriptors may be numbered above 1024."""
    poller = select.poll()
    poller.register(fd, select.POLLOUT if write else select.POLLIN)
    if not poller.poll(max(0, round((deadline - time.monotonic()) * 1000))):
        raise psycopg.OperationalError("the server did not answer the connection check in time")


def answers_within(timeout_s: float) -> Callable[[psycopg.Connection[Any]], None]:
    """The pool's check of a connection before lending it: an empty query answered within ``timeout_s`` s. A
    server that stopped answering without closing its sockets (its processes frozen, a network cut that drops
    packets) would otherwise hold the request until the operating system gives up on the connection (many
    minutes); the connection is closed instead (the pool replaces it) and the check raises OperationalError."""

    def check(conn: psycopg.Connection[Any]) -> None:
        pgconn, deadline = conn.pgconn, time.monotonic() + timeout_s
        try:
            pgconn.send_query(b"")
            while pgconn.flush():  # non-blocking connection: 1 while some of the query is still to send
                _wait_socket(pgconn.socket, deadline, write=True)
            pgconn.consume_input()
            while pgconn.is_busy():
                _wait_socket(pgconn.socket, deadline)
                pgconn.consume_input()
        except psycopg.OperationalError:
            conn.close()
            raise
        while (result := pgconn.get_result()) is not None:
            if result.status not in (pq.ExecStatus.EMPTY_QUERY, pq.ExecStatus.COMMAND_OK):
                conn.close()
                why = result.error_message.decode(errors="replace")
                raise psycopg.OperationalError(f"connection check failed: {why}")

    return check


FAIL_FAST_S = 0.5
"""Once borrowing a connection timed out, how long later borrows wait (instead of the whole timeout) until one
succeeds again: while the server is away each request is a 503 at once, so that waiting requests do not pile up
in the worker threads (with 40 threads and 120 requests at once, the last waited three timeouts)."""


class _FailFastPool(ConnectionPool[psycopg.Connection[Any]]):
    """A pool whose borrowers wait at most :data:`FAIL_FAST_S` while the last borrow timed out."""

    failing = False

    def getconn(self, timeout: float | None = None) -> psycopg.Connection[Any]:
        wait = self.timeout if timeout is None else timeout
        try:
            conn = super().getconn(min(wait, FAIL_FAST_S) if self.failing else wait)
        except PoolTimeout:
            self.failing = True
            raise
        self.failing = False
        return conn


def open_pool(
    url: str, options: PoolOptions, *, session: dict[str, str] | None = None, name: str = "facerec"
) -> ConnectionPool[psycopg.Connection[Any]]:
    """A pool of autocommit connections with pgvector's types registered and the ``session`` settings applied to
    each new connection (e.g. ``hnsw.ef_search``); opened without waiting (the start-up check connected once)."""
    settings = dict(session or {})

    def configure(conn: psycopg.Connection[Any]) -> None:
        register_vector(conn)
        for key, value in settings.items():
            conn.execute("SELECT set_config(%s, %s, false)", (key, value))

    pool = _FailFastPool(
        url,
        min_size=options.min_size,
        max_size=max(options.min_size, options.max_size),
        kwargs={"autocommit": True, "connect_timeout": options.connect_timeout_s},
        configure=configure,
        check=answers_within(options.timeout_s),
        timeout=options.timeout_s,
        reconnect_timeout=RECONNECT_TIMEOUT_S,
        name=name,
        open=False,
    )
    pool.open(wait=False)
    return pool
