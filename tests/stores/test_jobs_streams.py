"""The video job store's and the streams registry's contracts, on SQLite and on the real PostgreSQL; on
PostgreSQL, jobs run only on the replica holding their upload while every replica reads them, and each stream's
lease is held by one replica at a time and taken over when it runs out."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from service.gallery.postgres.connection import PoolOptions
from service.pgstores import open_postgres
from service.pgstores.media import PostgresStreamStore, replica_id
from service.streams.source import source_key
from service.streams.store import DuplicateStream, StreamConfig, StreamNotFound, TooManyStreams
from service.video.jobstore import JobNotFound
from tests.storefixtures import OpenStores


def test_job_store_creates_updates_lists_recovers_and_deletes(media_stores: OpenStores) -> None:
    jobs = media_stores("a").jobs
    job_id, path = jobs.new_path()
    path.write_bytes(b"video")
    job = jobs.create(job_id, filename="clip.mp4", path=path, fps=2.0, size=5)
    assert (job.status, job.filename, job.bytes, job.fps) == ("queued", "clip.mp4", 5, 2.0)
    gone_id, gone_path = jobs.new_path()  # its upload never written: fails visibly at recovery
    jobs.create(gone_id, filename="lost.mp4", path=gone_path, fps=None, size=1)
    assert jobs.next_queued() is not None and jobs.next_queued().id == job_id  # type: ignore[union-attr]
    assert jobs.update(job_id, status="running", progress=0.5)
    jobs.recover()  # a restart: the running job is queued again
    assert jobs.get(job_id).status == "queued" and jobs.get(job_id).progress == 0.0
    assert jobs.get(gone_id).status == "failed" and "gone" in (jobs.get(gone_id).error or "")
    tracks = [{"track_id": 1, "subject_id": None}]
    assert jobs.update(job_id, status="done", tracks=tracks, duration_s=3.0, progress=1.0)
    reader = media_stores("a").jobs  # SQLite: reopened; PostgreSQL: another connection pool of the same replica
    done = reader.get(job_id)
    assert done.status == "done" and done.tracks == tracks and done.duration_s == 3.0
    assert [j.id for j in reader.list()] == [gone_id, job_id]  # newest first
    assert reader.delete(job_id).id == job_id
    assert not jobs.update(job_id, progress=0.9)  # the runner learns that its job is gone
    with pytest.raises(JobNotFound):
        jobs.get(job_id)
    with pytest.raises(JobNotFound):
        jobs.delete(job_id)


def test_job_store_pages_newest_first_with_ties_broken_by_id(media_stores: OpenStores) -> None:
    jobs = media_stores("a").jobs
    ids = []
    for _ in range(5):
        job_id, path = jobs.new_path()
        jobs.create(job_id, filename="clip.mp4", path=path, fps=None, size=1)
        ids.append(job_id)
    same = 1_765_000_000.1234567  # three jobs made in the same instant: the id decides their order
    for job_id in ids[1:4]:
        assert jobs.update(job_id, created_at=same)
    assert jobs.update(ids[0], created_at=same - 1.0)
    expected = [ids[4], *sorted(ids[1:4], reverse=True), ids[0]]
    seen, after = [], None
    while True:
        page = jobs.list(limit=2, after=after)
        seen += [j.id for j in page]
        if len(page) < 2:
            break
        after = (page[-1].created_at, page[-1].id)
    assert seen == expected  # each job once, none skipped at the tie
    rest = expected[expected.index(ids[1]) + 1 :]
    assert [j.id for j in jobs.list(limit=10, after=(same, ids[1]))] == rest


def test_uploads_no_job_names_are_swept_once_idle(media_stores: OpenStores) -> None:
    import os
    from typing import Any, cast

    from service.video.jobs import ORPHAN_IDLE_S, JobRunner

    jobs = media_stores("a").jobs
    kept_id, kept = jobs.new_path()
    kept.write_bytes(b"video")
    jobs.create(kept_id, filename="clip.mp4", path=kept, fps=None, size=5)
    gone_id, gone = jobs.new_path()  # deleted through another replica while queued: the row went, the file stayed
    gone.write_bytes(b"video")
    jobs.create(gone_id, filename="clip.mp4", path=gone, fps=None, size=5)
    media_stores("b").jobs.delete(gone_id)
    _, cut = jobs.new_path()  # a crash mid-upload: the file is written before its row
    cut.write_bytes(b"half a vid")
    _, streaming = jobs.new_path()  # an upload still arriving: no row yet, written to just now
    streaming.write_bytes(b"vid")
    old = time.time() - ORPHAN_IDLE_S - 60
    for path in (kept, gone, cut):
        os.utime(path, (old, old))
    assert sorted(p.name for p in jobs.orphan_uploads(idle_s=ORPHAN_IDLE_S)) == sorted([gone.name, cut.name])
    runner = JobRunner(jobs, cast(Any, None), keep_uploads=False, default_fps=5.0)
    assert runner.sweep() == 2
    assert kept.is_file() and streaming.is_file() and not gone.exists() and not cut.exists()


def test_stream_registry_adds_lists_and_deletes(media_stores: OpenStores) -> None:
    streams = media_stores("a").streams
    a = streams.add(name="door", url="rtsp://u:p@cam/1", fps=5.0)
    b = streams.add(name="hall", url="rtsp://cam/2", fps=2.0)
    other = media_stores("b").streams
    assert [s.id for s in other.all()] == [a.id, b.id] and other.count() == 2
    assert other.all()[0] == a  # the URL is stored in full (needed to reconnect)
    assert streams.claim([a.id, b.id], {}) == {a.id, b.id}  # nobody else reads them
    other.delete(a.id)
    assert [s.id for s in streams.all()] == [b.id]
    with pytest.raises(StreamNotFound):
        streams.delete(a.id)


def test_the_stream_limit_holds_when_replicas_add_at_once(media_stores: OpenStores) -> None:
    """Count and insert are one turn: 12 creations at once (from two replicas on PostgreSQL) against a limit of
    3 store exactly 3, and the other 9 are told there are too many."""
    stores = [media_stores("a").streams, media_stores("b").streams]
    start = threading.Barrier(12)

    def create(i: int) -> bool:
        start.wait()
        try:
            stores[i % 2].add(name=f"cam{i}", url=f"rtsp://cam/{i}", fps=5.0, limit=3)
        except TooManyStreams:
            return False
        return True

    with ThreadPoolExecutor(12) as pool:
        made = list(pool.map(create, range(12)))
    assert sum(made) == 3 and stores[0].count() == 3


def test_postgres_one_replica_reads_each_stream_and_takes_over_an_expired_lease(pg_url: str, tmp_path: Path) -> None:
    backends = [open_postgres(pg_url, pool=PoolOptions(min_size=1, max_size=2)) for _ in range(2)]
    try:
        a = PostgresStreamStore(backends[0].pool, replica_id(tmp_path / "a"), lease_s=1.0)
        b = PostgresStreamStore(backends[1].pool, replica_id(tmp_path / "b"), lease_s=1.0)
        assert a.owner != b.owner and replica_id(tmp_path / "a") == a.owner  # stable per data dir
        s1, s2 = a.add(name="one", url="rtsp://cam/1", fps=5.0), b.add(name="two", url="rtsp://cam/2", fps=5.0)
        assert a.claim([s1.id], {s1.id: {"state": "running"}}) == {s1.id}
        assert b.claim([s1.id, s2.id], {}) == {s2.id}  # s1 is a's while its lease runs
        assert a.claim([s1.id, s2.id], {}) == {s1.id}  # renewed; s2 is b's
        assert b.healths() == {s1.id: {"state": "running"}}  # a's reader's health, seen by b
        time.sleep(1.2)  # a stops renewing (it died): its lease runs out
        assert b.claim([s1.id, s2.id], {}) == {s1.id, s2.id}
        assert a.claim([s1.id, s2.id], {}) == set()
        b.release([s1.id])  # a clean shutdown hands a stream back at once
        assert a.claim([s1.id], {}) == {s1.id}
    finally:
        for backend in backends:
            backend.close()


def test_postgres_jobs_run_on_the_replica_holding_their_upload(pg_url: str, tmp_path: Path) -> None:
    backends = [open_postgres(pg_url, pool=PoolOptions(min_size=1, max_size=2)) for _ in range(2)]
    try:
        a, b = (backend.media_stores(tmp_path / name).jobs for backend, name in zip(backends, "ab", strict=True))
        job_id, path = a.new_path()
        path.write_bytes(b"video")
        a.create(job_id, filename="clip.mp4", path=path, fps=None, size=5)
        assert b.get(job_id).status == "queued" and [j.id for j in b.list()] == [job_id]  # any replica answers
        assert b.next_queued() is None and a.next_queued() is not None  # only a holds the upload
        b.recover()  # b's restart leaves a's job alone (its upload is not on b's disk)
        assert b.get(job_id).status == "queued"
    finally:
        for backend in backends:
            backend.close()


def test_first_uses_of_a_replica_id_at_once_agree_on_one(tmp_path: Path) -> None:
    """The job store and the stream store resolve the id lazily, each on first use, possibly at the same moment."""
    import threading

    ids: list[str] = []
    threads = [threading.Thread(target=lambda: ids.append(replica_id(tmp_path / "r"))) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(ids) == 16 and len(set(ids)) == 1
    assert [p.name for p in (tmp_path / "r").iterdir()] == ["replica.id"]


def test_a_source_is_stored_once_whatever_its_credentials_host_case_or_default_port(media_stores: OpenStores) -> None:
    """The same camera again is :class:`DuplicateStream` naming the stream that reads it, and adds nothing; any
    other path, query, port or scheme is another source."""
    streams, other = media_stores("a").streams, media_stores("b").streams
    door = streams.add(name="door", url="rtsp://admin:secret@Cam.Local/live", fps=5.0)
    webcam = streams.add(name="webcam", url="0", fps=5.0)
    for url, existing in (
        ("rtsp://admin:secret@Cam.Local/live", door),
        ("rtsp://cam.local:554/live", door),
        ("RTSP://viewer:other@CAM.LOCAL:554/live", door),
        ("/dev/video0", webcam),
    ):
        with pytest.raises(DuplicateStream) as refused:
            other.add(name="again", url=url, fps=1.0, limit=8)
        assert refused.value.existing == existing, url
    for url in (
        "rtsp://cam.local/Live",
        "rtsp://cam.local:8554/live",
        "rtsp://cam.local/live?ch=2",
        "rtsps://cam.local/live",
    ):
        streams.add(name="another", url=url, fps=1.0)
    assert [s.name for s in other.all()] == ["door", "webcam", *["another"] * 4]


def test_one_of_two_replicas_adding_one_camera_at_once_stores_it(media_stores: OpenStores) -> None:
    """12 creations of one camera at once (from two replicas on PostgreSQL, its URL written three ways): one is
    stored, the 11 others are told which stream reads it."""
    stores = [media_stores("a").streams, media_stores("b").streams]
    urls = ["rtsp://u:p@cam/1", "rtsp://CAM:554/1", "rtsp://cam/1"]
    start = threading.Barrier(12)

    def create(i: int) -> str:
        start.wait()
        try:
            return stores[i % 2].add(name=f"cam{i}", url=urls[i % 3], fps=5.0, limit=8).id
        except DuplicateStream as exc:
            return f"refused: {exc.existing.id}"

    with ThreadPoolExecutor(12) as pool:
        outcomes = list(pool.map(create, range(12)))
    [stored] = stores[0].all()
    assert sorted(outcomes) == sorted([stored.id, *[f"refused: {stored.id}"] * 11])


def test_streams_that_already_read_one_source_are_kept_and_it_is_not_added_a_third_time(
    media_stores: OpenStores,
) -> None:
    """Two rows of one URL, as a version that did not check left them: both stay (listed, read, deletable); adding
    the URL again names the oldest."""
    streams = media_stores("a").streams
    with streams._writer() as c:
        for stream_id, created in (("old1", 1.0), ("old2", 2.0)):
            c.execute(
                "INSERT INTO streams (id, name, url, fps, created_at) VALUES (?, ?, ?, ?, ?)",
                (stream_id, "door", "rtsp://cam/1", 5.0, created),
            )
    reopened = media_stores("a").streams
    assert [s.id for s in reopened.all()] == ["old1", "old2"]
    with pytest.raises(DuplicateStream) as refused:
        reopened.add(name="door", url="rtsp://cam:554/1", fps=5.0)
    assert refused.value.existing.id == "old1" and reopened.count() == 2
    reopened.delete("old1")
    with pytest.raises(DuplicateStream) as refused:
        reopened.add(name="door", url="rtsp://cam/1", fps=5.0)
    assert refused.value.existing.id == "old2"


def test_a_stream_is_changed_in_place_keeping_its_id(media_stores: OpenStores) -> None:
    """Its name, URL (another password on the same camera, or another camera) and fps change, its id and
    creation time stay; another replica reads the change; an unknown id is :class:`StreamNotFound`; a URL that
    another stream reads is :class:`DuplicateStream` naming it, and nothing changes."""
    streams, other = media_stores("a").streams, media_stores("b").streams
    door = streams.add(name="door", url="rtsp://admin:old@cam.local/live", fps=5.0)
    hall = streams.add(name="hall", url="rtsp://cam.local/hall", fps=2.0)
    rotated = other.update(door.id, url="rtsp://admin:new@CAM.local:554/live")  # its own source: not a duplicate
    assert (rotated.id, rotated.name, rotated.fps, rotated.created_at) == (door.id, "door", 5.0, door.created_at)
    assert rotated.url == "rtsp://admin:new@CAM.local:554/live"
    renamed = streams.update(door.id, name="front door", fps=1.5)
    assert renamed == StreamConfig(door.id, "front door", rotated.url, 1.5, door.created_at)
    assert streams.update(door.id) == renamed  # nothing asked: nothing changed
    assert other.all() == [renamed, hall]
    with pytest.raises(DuplicateStream) as refused:
        other.update(door.id, name="changed?", url="rtsp://viewer:x@cam.local/hall", fps=9.0)
    assert refused.value.existing == hall
    with pytest.raises(StreamNotFound):
        other.update("nope", name="x")
    moved = other.update(door.id, url="rtsp://cam.local/yard")
    assert streams.all() == [StreamConfig(door.id, "front door", "rtsp://cam.local/yard", 1.5, door.created_at), hall]
    assert streams.add(name="door again", url="rtsp://cam.local/live", fps=5.0).url == "rtsp://cam.local/live"
    assert moved.id == door.id and streams.count() == 3


def test_changes_of_two_streams_and_an_addition_to_one_camera_at_once_let_one_read_it(
    media_stores: OpenStores,
) -> None:
    """Streams A and B are changed to camera X while X is added, 12 requests at once from two replicas (on
    PostgreSQL): the source check and the write are one turn of the registry, so one stream ends up reading X and
    every other request is refused naming it."""
    stores = [media_stores("a").streams, media_stores("b").streams]
    a = stores[0].add(name="a", url="rtsp://cam/a", fps=5.0)
    b = stores[1].add(name="b", url="rtsp://cam/b", fps=5.0)
    urls = ["rtsp://u:p@cam/x", "rtsp://CAM:554/x", "rtsp://cam/x"]
    start = threading.Barrier(12)

    def act(i: int) -> str:
        store, url = stores[i % 2], urls[i % 3]
        start.wait()
        try:
            if i % 3 == 0:
                return store.add(name=f"x{i}", url=url, fps=5.0, limit=8).id
            return store.update((a, b)[i % 3 - 1].id, url=url).id
        except DuplicateStream as exc:
            return f"refused: {exc.existing.id}"

    with ThreadPoolExecutor(12) as pool:
        outcomes = list(pool.map(act, range(12)))
    [reader] = [s for s in stores[0].all() if source_key(s.url) == source_key("rtsp://cam/x")]
    assert {o for o in outcomes if not o.startswith("refused")} == {reader.id}, outcomes
    assert all(o in (reader.id, f"refused: {reader.id}") for o in outcomes), outcomes
    assert len(stores[1].all()) == (2 if reader.id in (a.id, b.id) else 3)
