"""The interfaces of the service's other stores, next to the gallery's (:class:`service.gallery.base.Gallery`):
API keys and the audit log, and the bundle of media and photo stores a database shares (:class:`MediaStores`).
The embedded implementations are :class:`service.keys.KeyStore` (``<data>/keys.db``) and
:class:`service.audit.AuditLog` (``<data>/audit.log``); a database backend provides its own. Every caller (auth,
routes, the CLI, bootstrap) is typed against these, never against an implementation. (:class:`AuditStore` is an
abstract base in :mod:`service.audit`, re-exported here.)
"""

from __future__ import annotations

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


@dataclass(frozen=True)
class MediaStores:
    """The stores of events (and webhook outbox), video jobs, the streams registry and the photo library that a
    database backend shares between replicas (:mod:`service.pgstores`). Without one, the app opens the embedded
    SQLite files of its data dir instead (``events.db``, ``videos.db``, ``streams.db``, ``photos.sqlite3``)."""

    events: EventStore
    jobs: JobStore
    streams: StreamStore
    photos: PhotoStore
