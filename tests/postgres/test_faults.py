"""PostgreSQL going away under load (``pg_ctl -m immediate``, like a crash) and coming back: calls fail with
StorageUnavailable (HTTP 503) while it is down, never anything else; service resumes by itself within 5 s of the
server being back, with the same backend objects; no acknowledged write is lost."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from threading import Semaphore
from typing import Any, cast

import httpx
import numpy as np

from bench.video_scenes import MjpegServer
from embeddings import FaceAnalyzer
from service.app import create_app
from service.config import Settings
from service.devdb import DevCluster
from service.events.recorder import EventRecorder
from service.events.store import Event, EventFilter
from service.events.webhooks import WebhookSender
from service.gallery import StorageUnavailable
from service.gallery.postgres.connection import PoolOptions
from service.media import pipeline_config
from service.pgstores import PostgresBackend, open_postgres
from service.streams.store import StreamConfig
from service.streams.worker import StreamWorker
from service.video.deps import FrameDeps
from service.video.jobs import JobRunner
from tests.gallery.conftest import MODEL, faces, unit
from tests.postgres.helpers import served
from tests.postgres.test_service_wiring import no_analyzer
from tests.video.helpers import WebhookReceiver, people_scene


def test_immediate_stop_and_restart_under_load(own_cluster: DevCluster) -> None:
    backend: PostgresBackend = open_postgres(
        own_cluster.url(), pool=PoolOptions(min_size=2, max_size=4, timeout_s=1.0, connect_timeout_s=2)
    )
    g = backend.gallery
    subject = g.create_subject(name="load")
    rng = np.random.default_rng(7)
    acked: list[int] = []
    unexpected: list[BaseException] = []
    log: list[tuple[float, bool]] = []  # (time, ok) of every write
    stop = threading.Event()

    def writer(seed: int) -> None:
        r = np.random.default_rng(seed)
        while not stop.is_set():
            try:
                recs = g.add_faces(subject.id, faces(unit(r, 1)))
                acked.append(recs[0].id)
                log.append((time.monotonic(), True))
            except StorageUnavailable:
                log.append((time.monotonic(), False))
                time.sleep(0.05)
            except BaseException as e:  # anything else would be a 500
                unexpected.append(e)
                return

    def reader() -> None:
        probe = unit(rng, 1)
        while not stop.is_set():
            try:
                g.search(probe, model_id=MODEL, top_k=3)
                backend.keys.has_active()
            except StorageUnavailable:
                time.sleep(0.05)
            except BaseException as e:
                unexpected.append(e)
                return

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(3)] + [threading.Thread(target=reader)]
    for t in threads:
        t.start()
    try:
        time.sleep(1.5)
        before = len(acked)
        own_cluster.stop("immediate")
        down_at = time.monotonic()
        time.sleep(2.0)
        own_cluster.start()
        back_at = time.monotonic()
        deadline = back_at + 10
        while time.monotonic() < deadline and not any(ok and t > back_at for t, ok in log):
            time.sleep(0.05)
        time.sleep(1.0)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)
    try:
        assert unexpected == []
        assert before > 0
        failures_while_down = [t for t, ok in log if not ok and down_at <= t <= back_at]
        assert failures_while_down, "writes while PostgreSQL was down must fail (503), not hang or succeed"
        first_ok_after = min(t for t, ok in log if ok and t > back_at)
        assert first_ok_after - back_at <= 5.0
        assert not [t for t, ok in log if not ok and t > first_ok_after + 1.0]  # and it stays up
        stored = {r.id for r in g.list_faces(subject.id)}
        assert set(acked) <= stored  # every acknowledged face survived the crash
        assert g.face_count(MODEL) == len(stored)
    finally:
        backend.close()


def test_webhooks_and_video_jobs_resume_by_themselves_after_an_outage(own_cluster: DevCluster, tmp_path: Path) -> None:
    """The webhook sender's and the video job runner's threads outlive the database going away: once it is back,
    a new event is delivered and a new job is run (this one fails visibly: its upload is not a video)."""
    backend = open_postgres(
        own_cluster.url(), pool=PoolOptions(min_size=1, max_size=4, timeout_s=1.0, connect_timeout_s=2)
    )
    stores = backend.media_stores(tmp_path)
    receiver = WebhookReceiver()
    sender = WebhookSender(stores.events, url=receiver.url, secret="k", base_s=0.05, max_s=0.3).start()
    deps = FrameDeps(lambda: cast(FaceAnalyzer, object()), lambda: None, cast(Any, None), cast(Any, None), Semaphore())
    runner = JobRunner(stores.jobs, deps, keep_uploads=False, default_fps=5.0).start()
    try:
        time.sleep(1.0)
        own_cluster.stop("immediate")
        time.sleep(3.0)  # both threads meet the outage (the runner polls every second, the sender on its wake)
        sender.wake()
        time.sleep(1.0)
        own_cluster.start()
        deadline = time.monotonic() + 20
        while True:
            try:
                stores.events.add(
                    [Event("e1", time.time(), "stream:a", 1, None, None, None, None, 0, 1, 3)], outbox=True
                )
                break
            except StorageUnavailable:
                assert time.monotonic() < deadline, "PostgreSQL did not come back"
                time.sleep(0.2)
        sender.wake()
        job_id, path = stores.jobs.new_path()
        path.write_bytes(b"not a video")
        stores.jobs.create(job_id, filename="x.mp4", path=path, fps=None, size=11)
        runner.wake()
        deadline = time.monotonic() + 20
        while not (receiver.events() and stores.jobs.get(job_id).status == "failed"):
            assert time.monotonic() < deadline, (receiver.events(), stores.jobs.get(job_id))
            time.sleep(0.1)
        assert [e["id"] for e in receiver.events()] == ["e1"]
        assert "not a video" in (stores.jobs.get(job_id).error or "")
    finally:
        runner.close()
        sender.close()
        receiver.close()
        backend.close()


def test_a_stream_records_the_people_who_passed_while_the_database_was_away(
    own_cluster: DevCluster, tmp_path: Path, celebrity_root: Path, analyzer: FaceAnalyzer
) -> None:
    """A person decided while PostgreSQL is down (the gallery cannot be searched, the event cannot be stored) is
    recorded once it is back, not dropped."""
    backend = open_postgres(
        own_cluster.url(), pool=PoolOptions(min_size=1, max_size=4, timeout_s=1.0, connect_timeout_s=2)
    )
    events = backend.media_stores(tmp_path).events
    camera = MjpegServer(people_scene(celebrity_root)).start()
    config = pipeline_config(Settings(data=tmp_path), analyzer, live=True)
    deps = FrameDeps(
        lambda: analyzer, lambda: backend.gallery, lambda: config, EventRecorder(events, webhooks=False), Semaphore()
    )
    worker = StreamWorker(StreamConfig("cam", "cam", camera.url, 5.0, time.time()), deps).start()
    try:
        deadline = time.monotonic() + 60
        while worker.events == 0:  # running, and recording
            assert time.monotonic() < deadline, worker.health()
            time.sleep(0.1)
        own_cluster.stop("immediate")
        down_s = time.monotonic() - worker._t0  # the stream's clock (the camera does not go away)
        time.sleep(6.0)
        own_cluster.start()
        back_s = time.monotonic() - worker._t0
        time.sleep(8.0)
    finally:
        worker.stop()
        camera.stop()
    try:
        stored, _ = events.query(EventFilter(source="stream:cam", limit=1000))
        # people enter every 2 s and are decided about 1 s later: some were decided during the 6 s outage
        assert [e for e in stored if down_s <= e.first_s <= back_s - 2.0], (down_s, back_s, stored)
        assert len({e.id for e in stored}) == len(stored)
    finally:
        backend.close()


def test_requests_with_a_key_wait_for_the_database_side_by_side(own_cluster: DevCluster, tmp_path: Path) -> None:
    """With PostgreSQL down, a request with an API key (key store, shared rate limit) is a 503 in the error envelope
    after the pool's timeout; requests waiting for it hold neither each other nor ``/healthz`` up (the check does
    not block the event loop); once the database is back they are 200 again, without a restart."""
    settings = Settings(data=tmp_path, database_url=own_cluster.url(), db_timeout_s=1, rate_limit_per_minute=6000)
    app = create_app(settings, analyzer_factory=no_analyzer)

    async def scenario() -> None:
        async with served(app, timeout_s=60) as c:
            _, token = app.state.keys.create(scope="admin", name="t")
            key = {"X-API-Key": token}
            assert (await c.get("/v1/subjects", headers=key)).status_code == 200
            own_cluster.stop("immediate")
            t0 = time.monotonic()

            async def answered(path: str, headers: dict[str, str]) -> tuple[httpx.Response, float]:
                r = await c.get(path, headers=headers)
                return r, time.monotonic() - t0

            waiting = [asyncio.create_task(answered("/v1/subjects", key)) for _ in range(6)]
            waiting.append(asyncio.create_task(answered("/v1/subjects", {"X-API-Key": "frk_nope_nope"})))
            await asyncio.sleep(0.1)  # the key checks are under way
            health, health_at = await answered("/healthz", {})
            done = await asyncio.gather(*waiting)
            assert health.status_code == 200 and health_at < 0.8, health_at  # not after a key check's timeout
            assert [(r.status_code, r.json()["error"]["code"]) for r, _ in done] == [(503, "storage_unavailable")] * 7
            assert max(at for _, at in done) < 4.0, [round(at, 2) for _, at in done]  # 7 x 1 s one after another
            own_cluster.start()
            deadline = time.monotonic() + 10
            while (await c.get("/v1/subjects", headers=key)).status_code != 200:
                assert time.monotonic() < deadline, "the API did not serve again after PostgreSQL came back"
                await asyncio.sleep(0.2)

    asyncio.run(scenario())
