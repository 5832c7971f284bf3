"""The stream manager keeps nothing per deleted stream: adding and deleting streams for as long as a server runs
must not grow its memory, yet a sync that read the store before a deletion must still not restart the stream."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import pytest

from service.streams import manager as manager_module
from service.streams.manager import StreamManager
from service.streams.store import SQLiteStreamStore, StreamConfig
from service.video.deps import FrameDeps


class FakeWorker:
    """A :class:`StreamWorker` that starts no thread and opens no capture."""

    def __init__(self, cfg: StreamConfig, deps: Any, **settings: Any) -> None:
        self.cfg, self.running = cfg, False

    def start(self) -> FakeWorker:
        self.running = True
        return self

    def stop(self) -> None:
        self.running = False

    def health(self) -> dict[str, Any]:
        return {}


@pytest.fixture
def manager(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> StreamManager:
    monkeypatch.setattr(manager_module, "StreamWorker", FakeWorker)
    store = SQLiteStreamStore(tmp_path)
    return StreamManager(store, cast(FrameDeps, None), max_streams=4).start()


def test_deleted_streams_are_not_remembered(manager: StreamManager) -> None:
    for i in range(300):
        stream = manager.add(name=f"cam {i}", url=f"rtsp://127.0.0.1:9/{i}", fps=5.0)
        manager.delete(stream["id"])
    assert manager.workers() == []
    assert len(manager._deleted) == 0  # it grew by one id per deleted stream, for the life of the process


def sync_reading_before(manager: StreamManager, monkeypatch: pytest.MonkeyPatch, change: Callable[[], Any]) -> None:
    """Run a sync that reads the store, then waits while ``change`` is made, then acts on what it read."""
    read, changed = threading.Event(), threading.Event()
    all_streams = manager.store.all

    def stale_all() -> list[StreamConfig]:
        configs = all_streams()
        if threading.current_thread().name == "stale-sync":
            read.set()
            assert changed.wait(10)
        return configs

    monkeypatch.setattr(manager.store, "all", stale_all)
    syncing = threading.Thread(target=manager.sync, name="stale-sync")
    syncing.start()
    assert read.wait(10)
    change()
    changed.set()
    syncing.join(10)


def test_a_sync_that_read_the_store_before_a_deletion_does_not_restart_the_stream(
    manager: StreamManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    stream = manager.add(name="door", url="rtsp://127.0.0.1:9/door", fps=5.0)
    with manager._lock:  # the stream is read by the sync below, but not yet run by this process
        manager._workers.pop(stream["id"]).stop()
    sync_reading_before(manager, monkeypatch, lambda: manager.delete(stream["id"]))
    assert manager.workers() == []
    assert len(manager._deleted) == 0


def test_a_change_restarts_the_reader_on_a_new_url_or_fps_and_not_on_a_new_name(manager: StreamManager) -> None:
    stream = manager.add(name="door", url="rtsp://127.0.0.1:9/door", fps=5.0)
    [first] = cast(list[FakeWorker], manager.workers())
    assert manager.update(stream["id"], name="front door")["name"] == "front door"
    assert manager.workers() == [first] and first.running and first.cfg.name == "front door"
    assert manager.update(stream["id"])["name"] == "front door"  # nothing asked: nothing restarted
    assert manager.workers() == [first]
    manager.update(stream["id"], url="rtsp://127.0.0.1:9/yard", fps=2.0)
    [second] = cast(list[FakeWorker], manager.workers())
    assert second is not first and not first.running and second.running
    assert (second.cfg.id, second.cfg.url, second.cfg.fps) == (stream["id"], "rtsp://127.0.0.1:9/yard", 2.0)


def test_a_sync_that_read_the_store_before_a_change_does_not_restart_the_old_settings(
    manager: StreamManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    stream = manager.add(name="door", url="rtsp://127.0.0.1:9/door", fps=5.0)
    sync_reading_before(manager, monkeypatch, lambda: manager.update(stream["id"], url="rtsp://127.0.0.1:9/yard"))
    [worker] = cast(list[FakeWorker], manager.workers())
    assert worker.cfg.url == "rtsp://127.0.0.1:9/yard" and worker.running
    assert len(manager._changed) == 0
