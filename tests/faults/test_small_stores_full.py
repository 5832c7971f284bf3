"""The small embedded stores (streams.db, videos.db, events.db next to the gallery) on a full disk: a write is
the 507 ``insufficient_storage`` envelope naming the file, never a 500, and nothing half-written stays; once
space is back the same request succeeds. A full disk is SQLite's own ``SQLITE_FULL``, made with ``PRAGMA
max_page_count`` on the store's connection (tests run as root: ``chmod`` would not stop a write)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.service.fakes import FakeAnalyzer, app_with, local

NO_LIMIT = 1073741823


@contextmanager
def full(db: sqlite3.Connection) -> Iterator[None]:
    """The connection's file can grow no more for the block (and a page's free space is used up first)."""
    db.execute(f"PRAGMA max_page_count={db.execute('PRAGMA page_count').fetchone()[0]}")
    try:
        yield
    finally:
        db.execute(f"PRAGMA max_page_count={NO_LIMIT}")


def insufficient(r: Any, file: str) -> None:
    assert r.status_code == 507, r.text
    error = r.json()["error"]
    assert error["code"] == "insufficient_storage" and file in error["message"], error


def test_streams_and_videos_on_a_full_disk_answer_507(tmp_path: Path) -> None:
    app = app_with(tmp_path, lambda _: FakeAnalyzer(), streams_max=1000)
    with local(app) as client:
        media = app.state.media
        streams_db, videos_db = media.streams.store._file._db, media.jobs._file._db
        body = {"name": "door " + "x" * 190, "url": "rtsp://127.0.0.1:9/" + "c" * 1000, "fps": 1}
        with full(streams_db):
            for i in range(200):  # the last page's free space first, then the refusal
                r = client.post("/v1/streams", json={**body, "url": f"{body['url']}/{i}"})  # one camera each
                if r.status_code != 201:
                    break
            insufficient(r, "streams.db")
            stored = len(client.get("/v1/streams").json())
        assert stored == len(media.streams.store.all())  # a refused creation left no row behind
        ids = [s["id"] for s in client.get("/v1/streams").json()]
        for stream_id in ids:
            assert client.delete(f"/v1/streams/{stream_id}").status_code == 204
        files = {"video": ("a.avi", b"not really a video", "video/x-msvideo")}
        with full(videos_db):
            for _ in range(200):
                r = client.post("/v1/videos", files=files, data={"fps": "1"})
                if r.status_code != 202:
                    break
            insufficient(r, "videos.db")
        r = client.post("/v1/streams", json=body)  # space is back: writes work again by themselves
        assert r.status_code == 201, r.text


def test_a_video_upload_on_a_full_disk_answers_507_and_leaves_no_file(tmp_path: Path) -> None:
    """The upload file itself cannot be written (``EFBIG`` past the process's file size limit stands in for a
    full disk): 507 naming the upload dir, no job, no partial file; the same upload succeeds once space is back."""
    import resource
    import signal

    app = app_with(tmp_path, lambda _: FakeAnalyzer())
    video = {"video": ("a.avi", b"v" * 3_000_000, "video/x-msvideo")}
    with local(app) as client:
        uploads = app.state.media.jobs.uploads
        soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
        previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of the signal's kill
        resource.setrlimit(resource.RLIMIT_FSIZE, (1_000_000, hard))
        try:
            r = client.post("/v1/videos", files=video, data={"fps": "1"})
        finally:
            resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
            signal.signal(signal.SIGXFSZ, previous)
        insufficient(r, "upload")
        assert client.get("/v1/videos").json()["items"] == []
        assert list(uploads.glob("*")) == []
        r = client.post("/v1/videos", files=video, data={"fps": "1"})
        assert r.status_code == 202, r.text
