"""API keys, the audit log and the shared rate limit in PostgreSQL, with the same APIs and semantics as
:class:`service.keys.KeyStore`, :class:`service.audit.AuditLog` and :class:`service.ratelimit.RateLimiter`, for
replicas that share one database.

No cache: every check reads the database, so a key revoked through one replica is refused by every replica at
its next request. The rate limit is shared: one token bucket per caller in the database (an UNLOGGED table,
updated with one statement per request and timed by the database's clock), so N replicas allow a key the
configured rate in total, not N times it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import psycopg

from service.audit import AuditStore, unrecorded
from service.gallery.errors import StorageError, StorageFull
from service.keys import (
    KEY_COLUMNS,
    MARK_USED,
    ApiKey,
    KeyNotFound,
    Scope,
    active_key,
    check_new,
    new_token,
    now_iso,
    token_key_id,
)
from service.pgstores.pool import Pool, connection
from service.ratelimit import RateLimiter


class PostgresKeyStore:
    """The ``api_keys`` table: tokens ``frk_<id>_<secret>``, stored as sha256, compared in constant time."""

    def __init__(self, pool: Pool) -> None:
        self._pool = pool

    def create(self, *, scope: Scope, name: str = "", expires_at: str | None = None) -> tuple[ApiKey, str]:
        """A new key and its token; the token is not stored and cannot be shown again. ``expires_at`` (from
        :func:`service.keys.expiry`) must be in the future."""
        check_new(scope, expires_at)
        key_id, token, digest = new_token()
        created = now_iso()
        with connection(self._pool) as conn:
            conn.execute(
                "INSERT INTO api_keys (id, name, scope, token_sha256, created_at, expires_at) "
                "VALUES (%s, %s, %s, %s, %s, %s)",
                (key_id, name, scope, digest, created, expires_at),
            )
        return ApiKey(key_id, name, scope, created, None, expires_at), token

    def list(self) -> list[ApiKey]:
        """Every key, oldest first, revoked and expired ones included."""
        with connection(self._pool) as conn:
            rows = conn.execute(f"SELECT {KEY_COLUMNS} FROM api_keys ORDER BY seq").fetchall()
        return [ApiKey(*row) for row in rows]

    def revoke(self, key_id: str) -> ApiKey:
        """Mark a key revoked (kept for the record); raises :class:`KeyNotFound`."""
        with connection(self._pool) as conn:
            row = conn.execute(
                f"UPDATE api_keys SET revoked_at = coalesce(revoked_at, %s) WHERE id = %s RETURNING {KEY_COLUMNS}",
                (now_iso(), key_id),
            ).fetchone()
        if row is None:
            raise KeyNotFound(key_id)
        return ApiKey(*row)

    def has_active(self) -> bool:
        """Whether any key is neither revoked nor expired."""
        with connection(self._pool) as conn:
            row = conn.execute(
                "SELECT 1 FROM api_keys WHERE revoked_at IS NULL AND (expires_at IS NULL OR expires_at > %s) LIMIT 1",
                (now_iso(),),
            ).fetchone()
        return row is not None

    def authenticate(self, token: str) -> ApiKey | None:
        """The key this token belongs to unless revoked (an expired one included, see
        :func:`service.keys.active_key`), else ``None`` (read from the database at every call)."""
        with connection(self._pool) as conn:
            row = conn.execute(
                f"SELECT {KEY_COLUMNS}, token_sha256 FROM api_keys WHERE id = %s", (token_key_id(token),)
            ).fetchone()
        return active_key(token, row)

    def mark_used(self, used: Mapping[str, str]) -> None:
        """Set ``last_used_at`` of each key id to its time, never moving it backwards (replicas race: the latest
        time wins); one transaction. Raises ``StorageError`` when the database refuses or is away."""
        with connection(self._pool) as conn, conn.cursor() as cur:
            cur.executemany(MARK_USED, [(at, key_id, at) for key_id, at in used.items()])

    def close(self) -> None:
        """Nothing to release: the pool belongs to the backend."""


class PostgresAuditLog(AuditStore):
    """The ``audit_log`` table; each record is committed (durable) before :meth:`record` returns."""

    def __init__(self, pool: Pool) -> None:
        self._pool = pool

    def _append(self, entry: dict[str, Any]) -> None:
        """Insert one record; a database that refuses it is :func:`service.audit.unrecorded`'s 507/503."""
        try:
            with connection(self._pool) as conn:
                conn.execute(
                    "INSERT INTO audit_log (entry) VALUES (%s::jsonb)", (json.dumps(entry, ensure_ascii=False),)
                )
        except StorageError as exc:
            full = isinstance(exc, StorageFull)
            why = "it is out of disk space" if full else "it is unavailable or read-only"
            raise unrecorded(entry, full=full, where="the database", why=why) from exc

    def tail(self, n: int = 20) -> list[dict[str, Any]]:
        """The last ``n`` records, oldest first."""
        with connection(self._pool) as conn:
            rows = conn.execute(
                "SELECT entry FROM (SELECT seq, entry FROM audit_log ORDER BY seq DESC LIMIT %s) t ORDER BY seq",
                (max(0, n),),
            ).fetchall()
        return [dict(r[0]) for r in rows]


_TAKE = """
INSERT INTO rate_buckets AS b (caller, tokens, updated_at, allowed)
VALUES (%(caller)s, %(burst)s - 1, extract(epoch FROM clock_timestamp()), true)
ON CONFLICT (caller) DO UPDATE SET
    allowed = least(%(burst)s, b.tokens + (excluded.updated_at - b.updated_at) * %(rate)s) >= 1,
    tokens = least(%(burst)s, b.tokens + (excluded.updated_at - b.updated_at) * %(rate)s)
             - CASE WHEN least(%(burst)s, b.tokens + (excluded.updated_at - b.updated_at) * %(rate)s) >= 1
                    THEN 1 ELSE 0 END,
    updated_at = excluded.updated_at
RETURNING tokens, allowed
"""
"""Refill the caller's bucket by the time elapsed (the database's clock), take a token if there is one; returns
the tokens left and whether one was taken. SET expressions read the row as it was before the update."""


class PostgresRateLimiter(RateLimiter):
    """Token buckets shared by every replica: the API of :class:`service.ratelimit.RateLimiter`, the buckets in
    the database. A bucket holds up to ``burst`` tokens and refills at ``per_minute / 60`` a second; each request
    takes one, in one atomic upsert. ``per_minute <= 0`` turns limiting off (no database call). While the
    database refuses writes, each replica limits with buckets of its own (reads keep working; writes 503
    anyway). Buckets idle long enough to be full again are deleted now and then (every :data:`PRUNE_EVERY` calls
    of a process)."""

    PRUNE_EVERY = 1000

    def __init__(self, pool: Pool, *, per_minute: float, burst: int) -> None:
        super().__init__(per_minute=per_minute, burst=burst)
        self._pool = pool
        self._calls = 0

    def acquire(self, caller: str) -> float:
        """Take a token for ``caller``: 0.0 when allowed, else the seconds until one is available."""
        if not self.enabled:
            return 0.0
        self._calls += 1
        with connection(self._pool) as conn:
            try:
                row = conn.execute(_TAKE, {"caller": caller, "burst": self.burst, "rate": self.rate}).fetchone()
                if self._calls % self.PRUNE_EVERY == 0:
                    conn.execute(
                        "DELETE FROM rate_buckets WHERE updated_at < extract(epoch FROM clock_timestamp()) - %s",
                        (self.burst / self.rate,),
                    )
            except psycopg.errors.ReadOnlySqlTransaction:  # a standby after a failover: reads must still answer
                return super().acquire(caller)  # this process's own buckets meanwhile
        assert row is not None
        tokens, allowed = float(row[0]), bool(row[1])
        return 0.0 if allowed else (1.0 - tokens) / self.rate
