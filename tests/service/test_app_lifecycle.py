"""The app around the model with a fake analyzer: readiness while it loads or after it failed, the 500
envelope, overload (429), body limits, malformed JSON, and model work off the event loop."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from service.config import Settings
from tests.service.fakes import LOCAL_URL, FakeAnalyzer, app_with, local
from tests.service.helpers import png, wait_until


def test_not_ready_until_the_model_is_loaded(tmp_path: Path) -> None:
    release = threading.Event()

    def slow(_: Settings) -> FakeAnalyzer:
        release.wait(30)
        return FakeAnalyzer()

    app = app_with(tmp_path, slow, ready_timeout_s=0.2)
    with local(app) as client:
        r = client.get("/readyz")
        assert r.status_code == 503 and r.json() == {
            "ready": False,
            "model": False,
            "gallery": True,
            "model_id": None,
            "threshold": None,
            "reason": "the model is still loading",
        }
        assert client.get("/healthz").status_code == 200
        busy = client.post("/v1/detect", files={"image": png(8, 8)})
        assert busy.status_code == 503 and busy.json()["error"]["code"] == "not_ready"
        release.set()
        wait_until(lambda: client.get("/readyz").status_code == 200)
        assert client.get("/readyz").json()["model_id"] == "fake"
        assert client.get("/readyz").json()["reason"] is None
        assert client.post("/v1/detect", files={"image": png(8, 8)}).json() == {
            "width": 20,
            "height": 10,
            "faces": [],
        }


def test_a_model_that_fails_to_load_is_reported(tmp_path: Path) -> None:
    def broken(_: Settings) -> FakeAnalyzer:
        raise OSError("/secret/path/weights.h5 unreadable")

    app = app_with(tmp_path, broken)
    with local(app) as client:
        wait_until(lambda: app.state.load_error is not None)
        r = client.post("/v1/detect", files={"image": png(8, 8)})
        assert r.status_code == 503 and "failed to load" in r.json()["error"]["message"]
        assert "/secret" not in r.text
        ready = client.get("/readyz")
        assert ready.status_code == 503 and ready.json()["reason"] == "the model failed to load: OSError"
        assert "/secret" not in ready.text


def test_unexpected_errors_carry_no_raw_text(tmp_path: Path) -> None:
    def explode() -> list[Any]:
        raise RuntimeError("password=hunter2 at /srv/secret")

    with local(app_with(tmp_path, lambda s: FakeAnalyzer(explode)), raise_server_exceptions=False) as client:
        r = client.post("/v1/detect", files={"image": png(8, 8)})
        assert r.status_code == 500 and r.json()["error"]["code"] == "internal_error"
        assert "hunter2" not in r.text and "secret" not in r.text


def test_overload_is_a_429(tmp_path: Path) -> None:
    def slow() -> list[Any]:
        time.sleep(0.5)
        return []

    app = app_with(tmp_path, lambda s: FakeAnalyzer(slow), inference_threads=1, max_pending=1)

    async def burst() -> list[int]:
        async with app.router.lifespan_context(app):
            await app.state.model_loaded.wait()
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url=LOCAL_URL) as client:
                calls = [client.post("/v1/detect", files={"image": png(8, 8)}) for _ in range(4)]
                responses = await asyncio.gather(*calls)
                assert all(r.json()["error"]["code"] == "overloaded" for r in responses if r.status_code == 429)
                return sorted(r.status_code for r in responses)

    assert asyncio.run(burst()) == [200, 200, 429, 429]


def test_body_limit_from_content_length(tmp_path: Path) -> None:
    with local(app_with(tmp_path, lambda s: FakeAnalyzer(), max_upload_bytes=1000)) as client:
        r = client.post("/v1/detect", files={"image": b"x" * 2000})
        assert r.status_code == 413 and r.json()["error"]["code"] == "payload_too_large"
        assert client.post("/v1/detect", files={"image": png(8, 8)}).status_code == 200


def test_model_work_runs_off_the_event_loop(tmp_path: Path) -> None:
    entered, release = threading.Event(), threading.Event()

    def slow() -> list[Any]:
        entered.set()
        assert release.wait(10)
        return []

    app = app_with(tmp_path, lambda s: FakeAnalyzer(slow))

    async def probe() -> float:
        async with app.router.lifespan_context(app):
            await app.state.model_loaded.wait()
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url=LOCAL_URL) as client:
                busy = asyncio.create_task(client.post("/v1/detect", files={"image": png(8, 8)}))
                # the detection is now blocked in a worker thread until the health check has answered
                assert await asyncio.to_thread(entered.wait, 10)
                start = time.perf_counter()
                assert (await client.get("/healthz")).status_code == 200
                elapsed = time.perf_counter() - start
                assert not busy.done()
                release.set()
                assert (await busy).status_code == 200
                return elapsed

    assert asyncio.run(probe()) < 0.5


def test_deeply_nested_json_is_a_422(tmp_path: Path) -> None:
    with local(app_with(tmp_path, lambda s: FakeAnalyzer())) as client:
        r = client.post("/v1/detect", content=b"[" * 100_000, headers={"Content-Type": "application/json"})
        assert r.status_code == 422 and r.json()["error"]["code"] == "validation_error"


def test_streamed_body_over_the_limit_on_a_json_route_is_a_413(tmp_path: Path) -> None:
    def chunks() -> Any:
        yield b'{"name": "'
        for _ in range(5):
            yield b"x" * 600
        yield b'"}'

    with local(app_with(tmp_path, lambda s: FakeAnalyzer(), max_upload_bytes=1000)) as client:
        r = client.post("/v1/subjects", content=chunks(), headers={"Content-Type": "application/json"})
        assert r.status_code == 413, r.text
        assert r.json() == {"error": {"code": "payload_too_large", "message": r.json()["error"]["message"]}}
        assert client.post("/v1/subjects", json={"name": "ok"}).status_code == 201


def test_one_ready_line_once_the_model_is_loaded(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="facerec.ready")
    app = app_with(tmp_path, lambda s: FakeAnalyzer(), port=8123)
    with local(app) as client:
        wait_until(lambda: client.get("/readyz").status_code == 200)
        assert client.post("/v1/subjects", json={"name": "Ada"}).status_code == 201
    lines = [r.getMessage() for r in caplog.records if r.name == "facerec.ready"]
    assert lines == [
        "facerec ready on http://127.0.0.1:8123 - model fake (?), gallery 0 subjects / 0 faces, "
        "API keys not required (loopback, no key yet)"
    ]
