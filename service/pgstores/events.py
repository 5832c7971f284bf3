"""The event store (track decisions and the webhook outbox) in PostgreSQL: the SQL of
:class:`service.events.store.EventStore`, on the backend's pool, so every replica lists, filters and erases the
same events.

Two differences from the embedded store, both for replicas: events are inserted under a transaction-scoped
advisory lock, so ``seq`` (the paging cursor) grows in commit order and a page never skips an event committed
late; and :meth:`PostgresEventStore.due` *claims* the deliveries it returns (``FOR UPDATE SKIP LOCKED``, their
next attempt pushed :data:`CLAIM_S` ahead), so each webhook is sent by one replica, and by another if the
claiming one dies before recording the outcome.
"""

from __future__ import annotations

from service.events.store import CLAIM_S, Event, EventStore, Pending
from service.pgstores.pool import SerialisedStore, connection

EVENTS_LOCK = 0x66616365_72656302
"""``pg_advisory_xact_lock`` key serialising event inserts ('facerec' + 2)."""

_CLAIM = """
WITH claimed AS (
    UPDATE outbox SET next_at = %(now)s + %(claim)s
    WHERE event_id IN (SELECT event_id FROM outbox WHERE next_at <= %(now)s ORDER BY next_at
                       LIMIT %(limit)s FOR UPDATE SKIP LOCKED)
    RETURNING event_id, attempts
)
SELECT e.id, e.time, e.source, e.track_id, e.subject_id, e.name, e.distance, e.estimated_fir, e.first_s, e.last_s,
       e.frames, c.attempts
FROM claimed c JOIN events e ON e.id = c.event_id ORDER BY e.seq
"""


class PostgresEventStore(SerialisedStore, EventStore):
    """:class:`EventStore` on the ``events`` and ``outbox`` tables; thread-safe (one pooled connection per call)."""

    lock_key = EVENTS_LOCK

    def due(self, now: float, limit: int) -> list[Pending]:
        """Claim and return the deliveries due at ``now`` (see the module doc)."""
        with connection(self._pool) as conn:
            rows = conn.execute(_CLAIM, {"now": now, "claim": CLAIM_S, "limit": limit}).fetchall()
        return [Pending(Event(*r[:-1]), int(r[-1])) for r in rows]
