"""The Milvus gallery's sync thread says when its passes start failing (a warning, once per distinct failure) and
when they work again (no server needed: the loop runs on a stand-in engine)."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import pytest

from service.gallery.milvus.gallery import MilvusGallery


class Engine:
    """Probes fail ``failures`` times with the same error, then succeed."""

    def __init__(self, failures: int) -> None:
        self.failures, self.calls = failures, 0

    def probe(self) -> None:
        self.calls += 1
        if self.calls <= self.failures:
            raise ConnectionError("milvus:19530 refused")


def test_a_failing_sync_pass_is_a_warning_once_then_recovery_is_said(caplog: pytest.LogCaptureFixture) -> None:
    gallery: Any = object.__new__(MilvusGallery)  # only what the loop reads
    gallery._stop, gallery.engine, gallery._reconcile_every = threading.Event(), Engine(5), 0
    gallery.pending = lambda: False
    caplog.set_level(logging.DEBUG, logger="facerec")
    loop = threading.Thread(target=gallery._sync_loop, args=(0.01,))
    loop.start()
    deadline = time.monotonic() + 10
    while gallery.engine.calls < 8 and time.monotonic() < deadline:
        time.sleep(0.01)
    gallery._stop.set()
    loop.join(5)
    records = [(r.levelno, r.getMessage()) for r in caplog.records if "sync pass" in r.getMessage()]
    assert records[0] == (logging.WARNING, "Milvus sync pass failed: ConnectionError: milvus:19530 refused")
    assert [level for level, _ in records[1:5]] == [logging.DEBUG] * 4  # the same failure again: quiet
    assert records[5] == (logging.INFO, "Milvus sync passes work again") and len(records) == 6
