"""The interfaces of the service's two other stores, next to the gallery's (:class:`service.gallery.base.Gallery`):
API keys and the audit log. The embedded implementations are :class:`service.keys.KeyStore` (``<data>/keys.db``)
and :class:`service.audit.AuditLog` (``<data>/audit.log``); a database backend provides its own. Every caller
(auth, routes, the CLI, bootstrap) is typed against these, never against an implementation.
"""

from __future__ import annotations

from typing import Any, Literal, Protocol, runtime_checkable

from service.audit import Action
from service.keys import ApiKey, Scope


@runtime_checkable
class ApiKeyStore(Protocol):
    """API keys: tokens shown once, stored hashed, compared in constant time; thread-safe. A revoked key is
    refused from the next :meth:`authenticate` on (every replica)."""

    def create(self, *, scope: Scope, name: str = "") -> tuple[ApiKey, str]:
        """A new key and its token; the token is not stored and cannot be shown again."""
        ...

    def list(self) -> list[ApiKey]:
        """Every key, oldest first, revoked ones included."""
        ...

    def revoke(self, key_id: str) -> ApiKey:
        """Mark a key revoked (kept for the record); raises :class:`service.keys.KeyNotFound`."""
        ...

    def has_active(self) -> bool:
        """Whether any key is not revoked."""
        ...

    def authenticate(self, token: str) -> ApiKey | None:
        """The active key this token belongs to, else ``None``."""
        ...

    def close(self) -> None:
        """Release the store's connections."""
        ...


@runtime_checkable
class AuditStore(Protocol):
    """An append-only audit log of changes (who, what, to what, when, through what); a record is durable when
    :meth:`record` returns. Never holds image bytes, embeddings or tokens. Thread-safe."""

    def record(
        self,
        action: Action,
        *,
        actor: dict[str, str] | str,
        target: dict[str, Any],
        count: int | None = None,
        via: Literal["api", "cli"] = "api",
    ) -> dict[str, Any]:
        """Append one record; returns the record written."""
        ...

    def tail(self, n: int = 20) -> list[dict[str, Any]]:
        """The last ``n`` records, oldest first."""
        ...
