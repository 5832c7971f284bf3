"""The interfaces of the service's other stores, next to the gallery's (:class:`service.gallery.base.Gallery`):
API keys and the audit log, and the bundle of media and photo stores a database shares (:class:`MediaStores`).
The embedded implementations are :class:`service.keys.KeyStore` (``<data>/keys.db``) and
:class:`service.audit.AuditLog` (``<data>/audit.log``); a database backend provides its own. Every caller (auth,
routes, the CLI, bootstrap) is typed against these, never against an implementation. (:class:`AuditStore` is an
abstract base in :mod:`service.audit`, re-exported here.)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from service.audit import AuditStore
from service.events.store import EventStore
from service.keys import ApiKey, Scope
from service.photos.base import PhotoStore
from service.streams.store import StreamStore
from service.video.jobstore import JobStore

__all__ = ["ApiKeyStore", "AuditStore", "MediaStores"]


@runtime_checkable
class ApiKeyStore(Protocol):
    """API keys: tokens shown once, stored hashed, compared in constant time; thread-safe. A revoked key is
    refused from the next :meth:`authenticate` on (every replica); an expired one from its ``expires_at`` on.
    Times are ISO 8601 UTC text (:func:`service.keys.iso`)."""

    def create(self, *, scope: Scope, name: str = "", expires_at: str | None = None) -> tuple[ApiKey, str]:
        """A new key and its token; the token is not stored and cannot be shown again. ``expires_at`` (None =
        never) must be in the future (``ValueError``)."""
        ...

    def list(self) -> list[ApiKey]:
        """Every key, oldest first, revoked and expired ones included."""
        ...

    def revoke(self, key_id: str) -> ApiKey:
        """Mark a key revoked (kept for the record); raises :class:`service.keys.KeyNotFound`."""
        ...

    def has_active(self) -> bool:
        """Whether any key is neither revoked nor expired."""
        ...

    def authenticate(self, token: str) -> ApiKey | None:
        """The key this token belongs to unless it is revoked, else ``None``; an expired key is returned (check
        :attr:`ApiKey.expired` / :meth:`ApiKey.allows`), so that the caller can say it expired."""
        ...

    def mark_used(self, used: Mapping[str, str]) -> None:
        """Set ``last_used_at`` of each key id to its time, never moving it backwards; one write. Raises the
        storage's error when it refuses (callers off the request path: :mod:`service.key_usage`)."""
        ...

    def close(self) -> None:
        """Release the store's connections."""
        ...


@dataclass(frozen=True)
class MediaStores:
    """The stores of events (and webhook outbox), video jobs, the streams registry and the photo library that a
    database backend shares between replicas (:mod:`service.pgstores`). Without one, the app opens the embedded
    SQLite files of its data dir instead (``events.db``, ``videos.db``, ``streams.db``, ``photos.sqlite3``)."""

    events: EventStore
    jobs: JobStore
    streams: StreamStore
    photos: PhotoStore
