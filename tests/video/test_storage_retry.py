"""Decisions tried again while the storage is away: :func:`until_stored`, and ``facerec watch`` going on through
a database outage (the pipeline's gallery search raising ``StorageUnavailable``) instead of dying with a
traceback."""

from __future__ import annotations

import threading
import time
from typing import Any, cast

import pytest

from service.commands.video import _decide
from service.gallery.errors import StorageUnavailable
from service.video import storage_retry
from service.video.storage_retry import until_stored


class Flaky:
    """Refuses ``failures`` times, then answers."""

    def __init__(self, failures: int) -> None:
        self.failures, self.calls = failures, 0

    def __call__(self) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            raise StorageUnavailable("the database is away")
        return "decided"


def test_a_decision_waits_for_the_storage_then_gives_up(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(storage_retry, "FIRST_WAIT_S", 0.01)
    told: list[str] = []
    flaky = Flaky(3)
    assert until_stored(flaky, waiting=lambda e: told.append(e.message)) == "decided"
    assert flaky.calls == 4 and told == ["the database is away"] * 3
    start = time.monotonic()
    with pytest.raises(StorageUnavailable):
        until_stored(Flaky(10**6), waiting=lambda e: None, give_up_s=0.2)
    assert time.monotonic() - start < 2.0
    stop = threading.Event()
    stop.set()  # Ctrl-C: no more waiting
    with pytest.raises(StorageUnavailable):
        until_stored(Flaky(1), waiting=lambda e: None, stop=stop)
    with pytest.raises(ValueError):  # anything else is not waited for

        def broken() -> None:
            raise ValueError("a bug")

        until_stored(broken, waiting=lambda e: None)


def test_watch_decides_through_a_short_outage_and_reports_a_long_one(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(storage_retry, "FIRST_WAIT_S", 0.01)
    due = cast(Any, type("Due", (), {"track_id": 7})())

    class Pipe:
        def __init__(self, failures: int) -> None:
            self.flaky = Flaky(failures)

        def decide(self, _due: Any) -> str:
            return self.flaky()

    assert _decide(cast(Any, Pipe(2)), due, threading.Event()) == "decided"
    err = capsys.readouterr().err
    assert err.count("warning: storage_unavailable: the database is away (track 7 waits)") == 2
    stop = threading.Event()
    stop.set()  # a refusal after Ctrl-C: reported, not waited for
    assert _decide(cast(Any, Pipe(1)), due, stop) is None
    assert "error: track 7 not decided: storage_unavailable" in capsys.readouterr().err
