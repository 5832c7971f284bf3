"""What monitoring sees while PostgreSQL is away: ``/readyz`` answers 503 (the gallery's database does not answer)
and 200 again by itself once it is back; ``/metrics`` keeps answering 200 with the process's own series; the
background threads log one line per failed pass."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import cast

import httpx
import pytest

from service.app import create_app
from service.config import Settings
from service.devdb import DevCluster
from service.gallery.postgres.connection import PoolOptions
from service.pgstores import open_postgres
from service.streams.manager import StreamManager
from service.video.deps import FrameDeps
from tests.postgres.helpers import served
from tests.postgres.test_service_wiring import no_analyzer


async def _until_ready(c: httpx.AsyncClient, timeout_s: float) -> httpx.Response:
    deadline = time.monotonic() + timeout_s
    while (r := await c.get("/readyz")).status_code != 200:
        assert time.monotonic() < deadline, r.text
        await asyncio.sleep(0.2)
    return r


def test_readyz_and_metrics_while_the_database_is_away(own_cluster: DevCluster, tmp_path: Path) -> None:
    settings = Settings(data=tmp_path, database_url=own_cluster.url(), db_timeout_s=1)
    app = create_app(settings, analyzer_factory=no_analyzer)

    async def scenario() -> None:
        async with served(app, timeout_s=30) as c:
            assert (await _until_ready(c, 30)).json()["gallery"] is True
            assert (await c.post("/v1/subjects", json={"name": "a"})).status_code == 201
            own_cluster.stop("immediate")
            t0 = time.monotonic()
            r = await c.get("/readyz")
            assert r.status_code == 503 and time.monotonic() - t0 < 3, r.text
            body = r.json()
            assert body["ready"] is False and body["model"] is True and body["gallery"] is False
            assert "database is unavailable" in body["reason"], body
            m = await c.get("/metrics")
            assert m.status_code == 200, m.text  # the process's own series, for the outage's alerts
            assert 'facerec_http_requests_total{method="POST",route="/v1/subjects",status="201"} 1.0' in m.text
            own_cluster.start()
            body = (await _until_ready(c, 10)).json()
            assert body["ready"] is True and body["gallery"] is True and body["reason"] is None
            m = await c.get("/metrics")
            assert m.status_code == 200 and "facerec_gallery_subjects 1.0" in m.text, m.text

    asyncio.run(scenario())


def test_background_threads_log_one_line_per_failed_pass(
    own_cluster: DevCluster, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A database outage is expected and every request reports it: the stream lease thread logs one warning line
    per failed renewal, not an ERROR with a traceback every few seconds (a bug would still get its traceback)."""
    backend = open_postgres(own_cluster.url(), pool=PoolOptions(min_size=1, max_size=2, timeout_s=0.3))
    # no stream is registered, so no worker (and no frame dependency) is ever made
    manager = StreamManager(backend.media_stores(tmp_path).streams, cast(FrameDeps, None), max_streams=8, renew_s=0.2)
    try:
        manager.start()
        caplog.set_level(logging.WARNING, logger="facerec.streams")
        own_cluster.stop("immediate")
        time.sleep(2.0)
        records = [r for r in caplog.records if r.name == "facerec.streams"]
        assert records, "no failed renewal was logged"
        assert all(r.levelno == logging.WARNING and r.exc_info is None for r in records), [
            (r.levelname, r.getMessage(), bool(r.exc_info)) for r in records
        ]
        assert "stream leases: renewal failed (the gallery database is unavailable" in records[0].getMessage()
    finally:
        manager.close()
        backend.close()


def test_many_requests_at_once_while_the_database_is_away_answer_within_about_one_timeout(
    own_cluster: DevCluster, tmp_path: Path
) -> None:
    """120 requests at once (three times the 40 worker threads): after the first timeout every borrow waits at most
    FAIL_FAST_S while the database is away, so the last request is not answered three timeouts late."""
    settings = Settings(data=tmp_path, database_url=own_cluster.url(), db_timeout_s=2)
    app = create_app(settings, analyzer_factory=no_analyzer)

    async def scenario() -> None:
        async with served(app, timeout_s=60) as c:
            await _until_ready(c, 30)
            own_cluster.stop("immediate")
            t0 = time.monotonic()

            async def answered() -> tuple[int, float]:
                r = await c.get("/v1/subjects")
                return r.status_code, time.monotonic() - t0

            done = await asyncio.gather(*(answered() for _ in range(120)))
            assert {code for code, _ in done} == {503}
            assert max(at for _, at in done) < 4.5, sorted(round(at, 1) for _, at in done)[::10]
            own_cluster.start()
            deadline = time.monotonic() + 10
            while (await c.get("/v1/subjects")).status_code != 200:
                assert time.monotonic() < deadline, "no service after the database came back"
                await asyncio.sleep(0.2)

    asyncio.run(scenario())


def test_a_pool_busy_with_requests_is_not_an_outage_for_readiness(own_cluster: DevCluster) -> None:
    """``/readyz``'s check uses a connection of its own: every pooled connection in use (a burst of requests) does
    not make a replica unready, which would take every replica out of a load balancer at the peak."""
    backend = open_postgres(own_cluster.url(), pool=PoolOptions(min_size=1, max_size=2, timeout_s=1.0))
    busy = [backend.pool.getconn() for _ in range(2)]
    try:
        t0 = time.monotonic()
        backend.gallery.check_available()
        assert time.monotonic() - t0 < 0.9
    finally:
        for conn in busy:
            backend.pool.putconn(conn)
        backend.close()
