"""Fast unit tests of the last-used recorder (:mod:`service.key_usage`) with a fake key store and clock, and of
the duration parser of ``keys create --expires-in``."""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from datetime import timedelta

import pytest

from service.durations import parse_duration
from service.key_usage import LAST_USED_EVERY_S, LastUsed


class Store:
    def __init__(self, fail: Exception | None = None, block: threading.Event | None = None) -> None:
        self.writes: list[dict[str, str]] = []
        self.fail, self.block = fail, block

    def mark_used(self, used: Mapping[str, str]) -> None:
        if self.block is not None:
            self.block.wait(10)
        if self.fail is not None:
            raise self.fail
        self.writes.append(dict(used))


def test_one_write_per_key_per_interval() -> None:
    now = [100.0]
    store = Store()
    usage = LastUsed(store, clock=lambda: now[0])
    usage.used("a")
    usage.used("a")
    usage.used("b")
    assert usage.flush()
    assert sorted(k for w in store.writes for k in w) == ["a", "b"]
    now[0] += LAST_USED_EVERY_S - 1
    usage.used("a")
    assert usage.flush() and sum("a" in w for w in store.writes) == 1
    now[0] += 1
    usage.used("a")
    assert usage.flush() and sum("a" in w for w in store.writes) == 2
    usage.close()
    usage.used("c")  # closed: not recorded
    assert not any("c" in w for w in store.writes)


def test_a_failing_or_hanging_store_never_holds_up_the_caller(caplog: pytest.LogCaptureFixture) -> None:
    failing = LastUsed(Store(fail=OSError("attempt to write a readonly database")))
    failing.used("a")
    assert failing.flush()
    assert "last use of 1 key(s) not recorded: attempt to write a readonly database" in caplog.text
    failing.close()
    hanging = Store(block=threading.Event())
    usage = LastUsed(hanging)
    started = time.monotonic()
    for i in range(1000):
        usage.used(f"k{i}")
    assert time.monotonic() - started < 1.0  # the store is stuck; the uses are only queued
    assert not usage.flush(0.05)
    assert hanging.block is not None
    hanging.block.set()
    assert usage.flush() and sum(len(w) for w in hanging.writes) == 1000
    usage.close()


def test_durations() -> None:
    assert parse_duration("90d") == timedelta(days=90)
    assert parse_duration("12h") == timedelta(hours=12)
    assert parse_duration("30m") == timedelta(minutes=30)
    assert parse_duration("45s") == timedelta(seconds=45)
    assert parse_duration("2w") == timedelta(weeks=2)
    assert parse_duration("0d") == timedelta(0)
    for bad in ("", "d", "1.5d", "-1d", "1y", "10", "1 d 2h", "1234567890d"):
        with pytest.raises(ValueError, match="not a duration"):
            parse_duration(bad)
    with pytest.raises(ValueError, match="too long"):
        parse_duration("999999999w")
