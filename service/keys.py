"""API keys: random tokens shown once, stored as sha256 in SQLite (``<data>/keys.db``), compared in
constant time.

A token looks like ``frk_<key_id>_<secret>``; the ``key_id`` finds the row, the sha256 of the whole token is
compared with ``hmac.compare_digest``. Scopes: ``admin`` (everything) and ``recognize`` (detect, verify,
identify).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from service.sqlite_file import open_sqlite

Scope = Literal["admin", "recognize"]
SCOPES: tuple[Scope, ...] = ("admin", "recognize")
KEYS_FILE = "keys.db"
_PREFIX = "frk"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS api_keys (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    scope TEXT NOT NULL CHECK (scope IN ('admin', 'recognize')),
    token_sha256 TEXT NOT NULL,
    created_at TEXT NOT NULL,
    revoked_at TEXT
)
"""


@dataclass(frozen=True, slots=True)
class ApiKey:
    """A stored key, without its secret. Times are ISO 8601 UTC."""

    id: str
    name: str
    scope: Scope
    created_at: str
    revoked_at: str | None

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    def allows(self, scope: Scope) -> bool:
        """``admin`` may do everything; ``recognize`` only what needs ``recognize``."""
        return self.active and (self.scope == "admin" or self.scope == scope)


class KeyNotFound(LookupError):
    """No key with that id."""


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


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
    """The key of ``row`` (``id, name, scope, created_at, revoked_at, token_sha256``, None = no such id) if
    ``token`` matches it (constant time, also for no row) and it is not revoked; else None."""
    ok = token_matches(token, row[5] if row else None)
    if row is None or not ok or row[4] is not None:
        return None
    return ApiKey(*row[:5])


def now_iso() -> str:
    """Now as the key stores write it: ISO 8601 UTC, whole seconds."""
    return _now()


class KeyStore:
    """The keys table of one data dir; safe to share between threads."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / KEYS_FILE
        self._lock = threading.Lock()
        self._db = open_sqlite(self.path, script=_SCHEMA)

    def create(self, *, scope: Scope, name: str = "") -> tuple[ApiKey, str]:
        """A new key and its token; the token is not stored and cannot be shown again."""
        if scope not in SCOPES:
            raise ValueError(f"scope must be one of {', '.join(SCOPES)}")
        key_id, token, digest = new_token()
        created = _now()
        with self._lock:
            self._db.execute(
                "INSERT INTO api_keys (id, name, scope, token_sha256, created_at) VALUES (?, ?, ?, ?, ?)",
                (key_id, name, scope, digest, created),
            )
        return ApiKey(key_id, name, scope, created, None), token

    def list(self) -> list[ApiKey]:
        """Every key, oldest first, revoked ones included."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, name, scope, created_at, revoked_at FROM api_keys ORDER BY rowid"
            ).fetchall()
        return [ApiKey(*row) for row in rows]

    def revoke(self, key_id: str) -> ApiKey:
        """Mark a key revoked (kept for the record); raises :class:`KeyNotFound`."""
        with self._lock:
            cur = self._db.execute(
                "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, ?) WHERE id = ?", (_now(), key_id)
            )
            if cur.rowcount == 0:
                raise KeyNotFound(key_id)
            row = self._db.execute(
                "SELECT id, name, scope, created_at, revoked_at FROM api_keys WHERE id = ?", (key_id,)
            ).fetchone()
        return ApiKey(*row)

    def has_active(self) -> bool:
        with self._lock:
            row = self._db.execute("SELECT 1 FROM api_keys WHERE revoked_at IS NULL LIMIT 1").fetchone()
        return row is not None

    def authenticate(self, token: str) -> ApiKey | None:
        """The active key this token belongs to, else ``None``; the digest comparison is constant-time."""
        key_id = token_key_id(token)
        with self._lock:
            row = self._db.execute(
                "SELECT id, name, scope, created_at, revoked_at, token_sha256 FROM api_keys WHERE id = ?",
                (key_id,),
            ).fetchone()
        return active_key(token, row)

    def close(self) -> None:
        with self._lock:
            self._db.close()
