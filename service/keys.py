"""API keys: random tokens shown once, stored as sha256 in SQLite (``<data>/keys.db``), compared in
constant time.

A token looks like ``frk_<key_id>_<secret>``; the ``key_id`` finds the row, the sha256 of the whole token is
compared with ``hmac.compare_digest``. Scopes: ``admin`` (everything) and ``recognize`` (detect, verify,
identify).

A key may expire (``expires_at``, ISO 8601 UTC, whole seconds; None = never): from then on it is refused as a
revoked one is, and like a revoked key it no longer counts as active for the no-key rule of
:func:`service.auth.keys_required`. ``last_used_at`` is when a request last presented the key, recorded at most
once a minute by :mod:`service.key_usage`. All times are written by :func:`now_iso` / :func:`iso`, one format, so
the stores compare them as text.

``keys.db`` is versioned with ``PRAGMA user_version`` (:data:`MIGRATIONS`), upgraded in place when opened.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import secrets
import sqlite3
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from service.durations import parse_duration
from service.gallery.errors import StorageUnavailable
from service.gallery.sqlite.errors import storage_errors
from service.sqlite_file import open_sqlite, usable

Scope = Literal["admin", "recognize"]
SCOPES: tuple[Scope, ...] = ("admin", "recognize")
KEYS_FILE = "keys.db"
_PREFIX = "frk"

MIGRATIONS: dict[int, str] = {
    1: """
    CREATE TABLE IF NOT EXISTS api_keys (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        scope TEXT NOT NULL CHECK (scope IN ('admin', 'recognize')),
        token_sha256 TEXT NOT NULL,
        created_at TEXT NOT NULL,
        revoked_at TEXT
    );
    """,
    2: """
    ALTER TABLE api_keys ADD COLUMN expires_at TEXT;
    ALTER TABLE api_keys ADD COLUMN last_used_at TEXT;
    """,
}
"""``keys.db`` schema version -> SQL upgrading from the previous one (a file of version 1 has ``user_version`` 0:
the versions came with version 2). Append; never edit a released one."""
SCHEMA_VERSION = max(MIGRATIONS)

KEY_COLUMNS = "id, name, scope, created_at, revoked_at, expires_at, last_used_at"
"""The columns of :class:`ApiKey`, in its field order (both key stores select them)."""


@dataclass(frozen=True, slots=True)
class ApiKey:
    """A stored key, without its secret. Times are ISO 8601 UTC (:func:`iso`); None = never."""

    id: str
    name: str
    scope: Scope
    created_at: str
    revoked_at: str | None
    expires_at: str | None = None
    last_used_at: str | None = None

    @property
    def expired(self) -> bool:
        """Whether the key's expiry has come (now >= ``expires_at``)."""
        return self.expires_at is not None and self.expires_at <= now_iso()

    @property
    def active(self) -> bool:
        """Neither revoked nor expired."""
        return self.revoked_at is None and not self.expired

    @property
    def state(self) -> str:
        """``active``, ``revoked`` (also when it has expired since) or ``expired``."""
        return "revoked" if self.revoked_at is not None else "expired" if self.expired else "active"

    def allows(self, scope: Scope) -> bool:
        """``admin`` may do everything; ``recognize`` only what needs ``recognize``; nothing once inactive."""
        return self.active and (self.scope == "admin" or self.scope == scope)


class KeyNotFound(LookupError):
    """No key with that id."""


def iso(moment: datetime) -> str:
    """``moment`` as the key stores write times: ISO 8601 UTC, whole seconds (``2025-01-31T12:00:00+00:00``)."""
    return moment.astimezone(UTC).isoformat(timespec="seconds")


def _now() -> str:
    return iso(datetime.now(UTC))


def expiry(*, expires_in: str | None = None, expires_at: str | None = None) -> str | None:
    """The ``expires_at`` of a new key given as a duration from now (``90d``, :mod:`service.durations`) or an ISO
    8601 time (without a zone: UTC), or None (never). ``ValueError`` with a one-line reason for both at once,
    an unreadable value, or a time not in the future (a zero duration included)."""
    if expires_in is not None and expires_at is not None:
        raise ValueError("give --expires-in or --expires-at, not both")
    now = datetime.now(UTC).replace(microsecond=0)
    if expires_in is not None:
        length = parse_duration(expires_in)
        if length.total_seconds() <= 0:
            raise ValueError(f"--expires-in must be longer than zero, not {expires_in!r}")
        try:
            return iso(now + length)
        except OverflowError:
            raise ValueError(f"--expires-in {expires_in!r} ends after the year 9999") from None
    if expires_at is None:
        return None
    try:
        moment = datetime.fromisoformat(expires_at.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"--expires-at is not an ISO 8601 time: {expires_at!r}") from None
    try:
        when = iso(moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC))
    except OverflowError:  # a time near year 1 or 9999 that UTC moves out of range
        raise ValueError(f"--expires-at is out of range: {expires_at!r}") from None
    if when <= iso(now):
        raise ValueError(f"--expires-at {when} is not in the future (now {iso(now)})")
    return when


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> tuple[str, str, str]:
    """A new ``(key id, token, sha256 of the token)``; every key store makes its tokens here."""
    key_id = secrets.token_hex(6)
    token = f"{_PREFIX}_{key_id}_{secrets.token_urlsafe(32)}"
    return key_id, token, _digest(token)


def token_key_id(token: str) -> str:
    """The key id a token names (``""`` for a token of another shape)."""
    parts = token.split("_", 2)
    return parts[1] if len(parts) == 3 and parts[0] == _PREFIX else ""


def token_matches(token: str, stored_sha256: str | None) -> bool:
    """Whether ``token`` hashes to ``stored_sha256``; constant-time, and as slow for an unknown key (None)."""
    return hmac.compare_digest(_digest(token), stored_sha256 if stored_sha256 is not None else _digest(""))


def active_key(token: str, row: Sequence[Any] | None) -> ApiKey | None:
    """The key of ``row`` (:data:`KEY_COLUMNS` then ``token_sha256``, None = no such id) if ``token`` matches it
    (constant time, also for no row) and it is not revoked; else None. An expired key is returned: the caller
    tells it apart (:attr:`ApiKey.expired`) to say so."""
    ok = token_matches(token, row[-1] if row else None)
    if row is None or not ok or row[4] is not None:
        return None
    return ApiKey(*row[:-1])


def check_new(scope: str, expires_at: str | None) -> None:
    """``ValueError`` unless ``scope`` is a scope and ``expires_at`` (if any) is later than now."""
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {', '.join(SCOPES)}")
    if expires_at is not None and expires_at <= _now():
        raise ValueError(f"the expiry {expires_at} is not in the future")


MARK_USED = "UPDATE api_keys SET last_used_at = %s WHERE id = %s AND (last_used_at IS NULL OR last_used_at < %s)"
"""Record one use, never moving ``last_used_at`` backwards. Parameters (time, key id, time) as psycopg's ``%s``
markers; the SQLite store swaps them for ``?``."""


def now_iso() -> str:
    """Now as the key stores write it: ISO 8601 UTC, whole seconds."""
    return _now()


def _upgrade(conn: sqlite3.Connection, path: Path) -> None:
    """Bring ``keys.db`` to :data:`SCHEMA_VERSION` in one transaction; a file newer than this code is refused."""
    current = int(conn.execute("PRAGMA user_version").fetchone()[0])
    if current == SCHEMA_VERSION:
        return
    if current > SCHEMA_VERSION:
        raise StorageUnavailable(f"{path} has schema version {current}, newer than this code ({SCHEMA_VERSION})")
    conn.execute("BEGIN IMMEDIATE")
    try:
        current = max(int(conn.execute("PRAGMA user_version").fetchone()[0]), 0)  # another process may have won
        for version in range(current + 1, SCHEMA_VERSION + 1):
            for statement in MIGRATIONS[version].split(";"):
                if statement.strip():
                    conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:  # SQLite may have rolled back already (a full disk, an I/O error on COMMIT)
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
        raise


class KeyStore:
    """The keys table of one data dir; safe to share between threads. ``last_used_at`` is written through a
    connection of its own (:meth:`mark_used`), so that a write waiting on the file never holds up
    :meth:`authenticate`."""

    USED_WRITE_TIMEOUT_S = 1.0
    """How long a :meth:`mark_used` write waits for another process's write lock on ``keys.db``, seconds."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / KEYS_FILE
        self._lock = threading.Lock()
        self._db = open_sqlite(self.path)
        try:
            with usable(str(self.path)):
                _upgrade(self._db, self.path)
        except BaseException:
            self._db.close()
            raise
        self._used_lock = threading.Lock()
        self._used_db: sqlite3.Connection | None = None

    def create(self, *, scope: Scope, name: str = "", expires_at: str | None = None) -> tuple[ApiKey, str]:
        """A new key and its token; the token is not stored and cannot be shown again. ``expires_at`` (from
        :func:`expiry`) must be in the future."""
        check_new(scope, expires_at)
        key_id, token, digest = new_token()
        created = _now()
        with self._lock:
            self._db.execute(
                "INSERT INTO api_keys (id, name, scope, token_sha256, created_at, expires_at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (key_id, name, scope, digest, created, expires_at),
            )
        return ApiKey(key_id, name, scope, created, None, expires_at), token

    def list(self) -> list[ApiKey]:
        """Every key, oldest first, revoked and expired ones included."""
        with self._lock:
            rows = self._db.execute(f"SELECT {KEY_COLUMNS} FROM api_keys ORDER BY rowid").fetchall()
        return [ApiKey(*row) for row in rows]

    def revoke(self, key_id: str) -> ApiKey:
        """Mark a key revoked (kept for the record); raises :class:`KeyNotFound`."""
        with self._lock:
            cur = self._db.execute(
                "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, ?) WHERE id = ?", (_now(), key_id)
            )
            if cur.rowcount == 0:
                raise KeyNotFound(key_id)
            row = self._db.execute(f"SELECT {KEY_COLUMNS} FROM api_keys WHERE id = ?", (key_id,)).fetchone()
        return ApiKey(*row)

    def has_active(self) -> bool:
        """Whether any key is neither revoked nor expired."""
        with self._lock:
            row = self._db.execute(
                "SELECT 1 FROM api_keys WHERE revoked_at IS NULL AND (expires_at IS NULL OR expires_at > ?) LIMIT 1",
                (_now(),),
            ).fetchone()
        return row is not None

    def authenticate(self, token: str) -> ApiKey | None:
        """The key this token belongs to unless revoked (an expired one included, see :func:`active_key`), else
        ``None``; the digest comparison is constant-time."""
        key_id = token_key_id(token)
        with self._lock:
            row = self._db.execute(
                f"SELECT {KEY_COLUMNS}, token_sha256 FROM api_keys WHERE id = ?", (key_id,)
            ).fetchone()
        return active_key(token, row)

    def mark_used(self, used: Mapping[str, str]) -> None:
        """Set ``last_used_at`` of each key id to its time (:func:`iso`), never moving it backwards; one
        transaction. Raises ``StorageFull`` / ``StorageUnavailable`` when the file refuses the write."""
        with storage_errors(f"the storage of {KEYS_FILE}"), self._used_lock:
            if self._used_db is None:
                self._used_db = open_sqlite(self.path, f"busy_timeout={int(self.USED_WRITE_TIMEOUT_S * 1000)}")
            db = self._used_db
            db.execute("BEGIN IMMEDIATE")
            try:
                db.executemany(MARK_USED.replace("%s", "?"), [(at, key_id, at) for key_id, at in used.items()])
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        db.execute("ROLLBACK")
                raise

    def close(self) -> None:
        with self._lock:
            self._db.close()
        with self._used_lock:
            if self._used_db is not None:
                self._used_db.close()
                self._used_db = None
