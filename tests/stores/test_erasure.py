"""Erasing a person from the media stores: the embedded SQLite files keep no copy of erased rows
(``secure_delete=ON`` asked for explicitly, the WAL truncated after each erasure), and a video job's tracks
forget them (SQLite and the real PostgreSQL)."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from service import sqlite_file
from service.events.store import Event
from service.photos.types import NewObservation
from tests.storefixtures import OpenStores, sqlite_stores

GONE, KEPT = "a" * 32, "b" * 32


def _track(track_id: int, subject: str | None) -> dict[str, Any]:
    return {"track_id": track_id, "subject_id": subject, "name": subject and f"name-{subject[:4]}"}


def test_erasing_a_subject_drops_its_tracks_from_video_jobs(media_stores: OpenStores) -> None:
    jobs = media_stores("a").jobs
    ids = []
    for tracks in ([_track(1, GONE), _track(2, KEPT), _track(3, None), _track(4, GONE)], [_track(1, KEPT)], None):
        job_id, path = jobs.new_path()
        jobs.create(job_id, filename="clip.mp4", path=path, fps=None, size=1)
        if tracks is not None:
            jobs.update(job_id, status="done", tracks=tracks)
        ids.append(job_id)
    other = media_stores("b").jobs  # PostgreSQL: another replica erases
    assert other.erase_subject(GONE) == 1
    assert jobs.get(ids[0]).tracks == [_track(2, KEPT), _track(3, None)]
    assert jobs.get(ids[1]).tracks == [_track(1, KEPT)] and jobs.get(ids[2]).tracks is None
    assert other.erase_subject(GONE) == 0


def test_renaming_a_subject_renames_its_events_and_video_tracks(media_stores: OpenStores) -> None:
    """``PATCH /v1/subjects/{id}`` with a name: the stored events and tracks show it (they were stored with the
    name they were decided under); the other people's are untouched."""
    stores = media_stores("a")
    job_id, path = stores.jobs.new_path()
    stores.jobs.create(job_id, filename="clip.mp4", path=path, fps=None, size=1)
    stores.jobs.update(job_id, status="done", tracks=[_track(1, GONE), _track(2, KEPT), _track(3, None)])
    now = time.time()
    events = [
        Event(f"e{i}", now, f"video:{job_id}", i, sid, sid and f"name-{sid[:4]}", 0.5, 0.01, 0.0, 1.0, 5)
        for i, sid in enumerate((GONE, KEPT, None))
    ]
    stores.events.add(events, outbox=False)
    other = media_stores("b")  # PostgreSQL: another replica renames
    assert other.jobs.rename_subject(GONE, "New Name") == 1 and other.events.rename_subject(GONE, "New Name") == 1
    renamed = {**_track(1, GONE), "name": "New Name"}
    assert stores.jobs.get(job_id).tracks == [renamed, _track(2, KEPT), _track(3, None)]
    names = [e.name for e in stores.events.query()[0]]
    assert names == ["New Name", f"name-{KEPT[:4]}", None]
    assert other.jobs.rename_subject(GONE, "New Name") == 0 and other.events.rename_subject(GONE, "New Name") == 0


def _statements(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every SQL statement the embedded stores run from now on."""
    seen: list[str] = []
    connect = sqlite3.connect

    def traced(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        conn = connect(*args, **kwargs)
        conn.set_trace_callback(seen.append)
        return conn

    monkeypatch.setattr(sqlite_file.sqlite3, "connect", traced)
    return seen


def test_the_embedded_stores_ask_for_secure_delete(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Debian's SQLite has ``secure_delete`` on by default, python.org's builds do not: each file asks for it."""
    seen = _statements(monkeypatch)
    stores = sqlite_stores(tmp_path)
    try:
        asked = [s for s in seen if s.replace(" ", "").lower() == "pragmasecure_delete=on"]
        assert len(asked) >= 3, seen  # events.db, videos.db, photos.sqlite3 (streams.db holds no person)
    finally:
        for store in (stores.events, stores.jobs, stores.streams, stores.photos):
            store.close()


MARK = np.full(128, 0.0625, np.float32)  # an "embedding" whose bytes are easy to find
CROP = b"\x89PNG-not-really" + bytes(range(256)) * 4


def _erase_event(stores: Any) -> None:
    stores.events.add([Event("e1", time.time(), "video:x", 1, GONE, "name-gone", 0.5, 0.01, 0.0, 1.0, 5)], outbox=True)
    stores.events.erase_subject(GONE)


def _erase_track(stores: Any) -> None:
    job_id, path = stores.jobs.new_path()
    stores.jobs.create(job_id, filename="clip.mp4", path=path, fps=None, size=1)
    stores.jobs.update(job_id, status="done", tracks=[_track(1, GONE)])
    stores.jobs.erase_subject(GONE)


def _erase_photo_face(stores: Any) -> None:
    face = NewObservation(MARK, "m", {"x": 0, "y": 0, "width": 9, "height": 9}, {}, CROP, subject_id=GONE)
    photo, _, _ = stores.photos.add_photo(sha256="p1", external_id=None, faces=[face])
    stores.photos.add_photo(sha256="p2", external_id=None, faces=[face])
    stores.photos.delete_subject_faces(GONE)
    stores.photos.delete_photo(photo.id)


@pytest.mark.parametrize(
    ("erase", "secrets"),
    [
        (_erase_event, [GONE.encode(), b"name-gone"]),
        (_erase_track, [GONE.encode()]),
        (_erase_photo_face, [MARK.tobytes(), CROP[16:]]),
    ],
    ids=["event", "track", "photo-face"],
)
def test_no_file_keeps_an_erased_row(tmp_path: Path, erase: Callable[[Any], None], secrets: list[bytes]) -> None:
    stores = sqlite_stores(tmp_path)
    try:
        erase(stores)
        leaks = [(p.name, s[:12]) for p in tmp_path.rglob("*") if p.is_file() for s in secrets if s in p.read_bytes()]
        assert leaks == []
    finally:
        for store in (stores.events, stores.jobs, stores.streams, stores.photos):
            store.close()
