"""The event store's contract, on SQLite and on the real PostgreSQL: de-duplication by id, filters, paging,
erasure, retention, the webhook outbox; durable across a reopen (SQLite) or seen by another replica (PostgreSQL);
on PostgreSQL each due delivery is claimed by one replica only."""

from __future__ import annotations

import time
from pathlib import Path

from service.events.store import CLAIM_S, Event, EventFilter
from tests.storefixtures import OpenStores


def event(i: int, subject: str | None = "s1", source: str = "stream:a", at: float | None = None) -> Event:
    return Event(f"e{i}", time.time() if at is None else at, source, i, subject, subject, 0.5, 0.01, 0.0, 1.0, 5)


def ids(events: list[Event]) -> list[str]:
    return [e.id for e in events]


def test_event_store_dedupes_filters_pages_erases_and_purges(media_stores: OpenStores) -> None:
    store = media_stores("a").events
    now = time.time()
    new = store.add([event(1), event(2, "s2"), event(3, None, "video:v"), event(4, at=now - 86400 * 10)], outbox=False)
    assert ids(new) == ["e1", "e2", "e3", "e4"]
    assert ids(store.add([event(1), event(5)], outbox=False)) == ["e5"]
    assert ids(store.query()[0]) == ["e1", "e2", "e3", "e4", "e5"]  # e1 was not stored twice
    assert ids(store.query(EventFilter(subject_id="s1"))[0]) == ["e1", "e4", "e5"]
    assert ids(store.query(EventFilter(source="video:v"))[0]) == ["e3"]
    assert ids(store.query(EventFilter(since=now - 3600))[0]) == ["e1", "e2", "e3", "e5"]
    assert ids(store.query(EventFilter(until=now - 3600))[0]) == ["e4"]
    page, cursor = store.query(EventFilter(limit=2))
    assert ids(page) == ["e1", "e2"] and cursor is not None
    page, cursor = store.query(EventFilter(limit=2, cursor=cursor))
    assert ids(page) == ["e3", "e4"]
    page, cursor = store.query(EventFilter(limit=2, cursor=cursor))
    assert ids(page) == ["e5"] and cursor is None
    assert store.erase_subject("s1") == 3
    assert store.purge(now - 3600) == 0
    assert ids(store.query()[0]) == ["e2", "e3"]
    other = media_stores("b").events  # SQLite: the file reopened; PostgreSQL: another replica
    assert ids(other.query()[0]) == ["e2", "e3"]
    assert other.add([event(2, "s2")], outbox=False) == []


def test_erasing_a_subject_drops_its_pending_deliveries(media_stores: OpenStores) -> None:
    store = media_stores("a").events
    store.add([event(1), event(2, "s2")], outbox=True)
    assert store.pending_count() == 2
    store.erase_subject("s1")
    assert ids([p.event for p in store.due(time.time() + 1, 10)]) == ["e2"]
    store.delivered("e2")
    assert store.pending_count() == 0 and store.next_due() is None


def test_retry_later_counts_attempts_and_sets_the_next_time(media_stores: OpenStores) -> None:
    store = media_stores("a").events
    (e,) = store.add([event(1)], outbox=True)
    later = time.time() + 1000.0
    store.retry_later(e.id, later, "HTTP 503")
    assert store.due(time.time() + 1, 10) == [] and store.next_due() == later
    (pending,) = store.due(later, 10)
    assert pending.event == e and pending.attempts == 1


def test_postgres_replicas_claim_each_delivery_once(pg_url: str, tmp_path: Path) -> None:
    from service.gallery.postgres.connection import PoolOptions
    from service.pgstores import open_postgres

    a, b = (open_postgres(pg_url, pool=PoolOptions(min_size=1, max_size=2)) for _ in range(2))
    try:
        ea, eb = a.media_stores(tmp_path / "a").events, b.media_stores(tmp_path / "b").events
        ea.add([event(i) for i in range(6)], outbox=True)
        now = time.time() + 1
        first = ids([p.event for p in ea.due(now, 4)])
        second = ids([p.event for p in eb.due(now, 10)])
        assert len(first) == 4 and len(second) == 2 and not set(first) & set(second)
        assert eb.due(now, 10) == []  # all claimed
        # a replica that claimed and died: its deliveries are due again once the claim runs out
        assert sorted(ids([p.event for p in eb.due(now + CLAIM_S, 10)])) == sorted(first + second)
    finally:
        a.close()
        b.close()


def test_a_time_without_a_zone_is_utc() -> None:
    from datetime import UTC, datetime, timedelta, timezone

    from service.events.store import unix_seconds

    assert unix_seconds(datetime(2026, 12, 5, 8, 30)) == datetime(2026, 12, 5, 8, 30, tzinfo=UTC).timestamp()
    east = timezone(timedelta(hours=2))
    assert unix_seconds(datetime(2026, 12, 5, 10, 30, tzinfo=east)) == unix_seconds(datetime(2026, 12, 5, 8, 30))
    assert unix_seconds(datetime(1, 1, 1)) == -62135596800.0 and unix_seconds(None) is None
