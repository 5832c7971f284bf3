"""Fast tests of the service layers with a fake analyzer (no model): keys, auth modes, readiness, overload,
the 500 envelope and the body limit. The real pipeline is exercised by the server tests."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

from service.app import KeysRequired, check_bind, create_app
from service.config import Settings, is_loopback
from service.keys import KeyNotFound, KeyStore
from tests.service.helpers import png


class FakeDetector:
    def __init__(self, behaviour: Callable[[], list[Any]]) -> None:
        self.behaviour = behaviour

    def detect(self, image: Any) -> list[Any]:
        return self.behaviour()


class FakeAnalyzer:
    """Only what /v1/detect needs; ``behaviour`` decides what detection does (return, sleep or raise)."""

    model_id = "fake"
    threshold = 1.0

    def __init__(self, behaviour: Callable[[], list[Any]] = list) -> None:
        self.detector = FakeDetector(behaviour)

    def load_image(self, image: bytes) -> Any:
        return np.zeros((10, 20, 3), dtype=np.uint8)


def app_with(tmp_path: Path, analyzer_factory: Callable[[Settings], Any], **settings: Any) -> Any:
    return create_app(Settings(data=tmp_path / "data", **settings), analyzer_factory=analyzer_factory)


def test_keystore(tmp_path: Path) -> None:
    store = KeyStore(tmp_path)
    assert not store.has_active()
    key, token = store.create(scope="recognize", name="kiosk")
    assert store.has_active() and token.startswith(f"frk_{key.id}_")
    found = store.authenticate(token)
    assert found is not None and found.scope == "recognize" and found.allows("recognize")
    assert not found.allows("admin")
    for bad in ("", "frk", token[:-1], token + "x", f"frk_{key.id}_", "frk_zz_" + token.split("_", 2)[2]):
        assert store.authenticate(bad) is None, bad
    store.revoke(key.id)
    assert store.authenticate(token) is None and not store.has_active()
    with pytest.raises(KeyNotFound):
        store.revoke("nope")
    with pytest.raises(ValueError):
        store.create(scope="root", name="")  # type: ignore[arg-type]
    store.close()


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.1.2.3", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("192.168.1.10", False),
        ("example.com", False),
    ],
)
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_check_bind(tmp_path: Path) -> None:
    store = KeyStore(tmp_path)
    check_bind(Settings(data=tmp_path, host="127.0.0.1"), store)
    with pytest.raises(KeysRequired, match=r"refusing to listen on 0\.0\.0\.0"):
        check_bind(Settings(data=tmp_path, host="0.0.0.0"), store)
    store.create(scope="admin")
    check_bind(Settings(data=tmp_path, host="0.0.0.0"), store)
    store.close()


def test_keys_become_required_once_one_exists(tmp_path: Path) -> None:
    app = app_with(tmp_path, lambda s: FakeAnalyzer())
    with TestClient(app) as client:
        assert client.get("/v1/subjects").status_code == 200  # loopback, no keys: the local user
        store = KeyStore(tmp_path / "data")
        _, token = store.create(scope="recognize")
        assert client.get("/v1/subjects").json()["error"]["code"] == "unauthorized"
        assert client.get("/v1/subjects", headers={"X-API-Key": token}).status_code == 403
        assert (
            client.post("/v1/detect", files={"image": png(8, 8)}, headers={"X-API-Key": token}).status_code
            == 200
        )
        store.close()


def test_keys_always_required_off_loopback(tmp_path: Path) -> None:
    store = KeyStore(tmp_path / "data")
    _, token = store.create(scope="admin")
    app = app_with(tmp_path, lambda s: FakeAnalyzer(), host="0.0.0.0")
    with TestClient(app) as client:
        assert client.get("/v1/subjects").status_code == 401
        assert client.get("/v1/subjects", headers={"X-API-Key": token}).status_code == 200
        store.revoke(store.list()[0].id)
        assert client.get("/v1/subjects", headers={"X-API-Key": token}).status_code == 401
    store.close()


def test_not_ready_until_the_model_is_loaded(tmp_path: Path) -> None:
    release = threading.Event()

    def slow(_: Settings) -> FakeAnalyzer:
        release.wait(30)
        return FakeAnalyzer()

    app = app_with(tmp_path, slow, ready_timeout_s=0.2)
    with TestClient(app) as client:
        r = client.get("/readyz")
        assert r.status_code == 503 and r.json() == {
            "ready": False,
            "model": False,
            "gallery": True,
            "model_id": None,
            "threshold": None,
        }
        assert client.get("/healthz").status_code == 200
        busy = client.post("/v1/detect", files={"image": png(8, 8)})
        assert busy.status_code == 503 and busy.json()["error"]["code"] == "not_ready"
        release.set()
        deadline = time.monotonic() + 10
        while client.get("/readyz").status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert client.get("/readyz").json()["model_id"] == "fake"
        assert client.post("/v1/detect", files={"image": png(8, 8)}).json() == {
            "width": 20,
            "height": 10,
            "faces": [],
        }


def test_a_model_that_fails_to_load_is_reported(tmp_path: Path) -> None:
    def broken(_: Settings) -> FakeAnalyzer:
        raise OSError("/secret/path/weights.h5 unreadable")

    with TestClient(app_with(tmp_path, broken)) as client:
        time.sleep(0.2)
        r = client.post("/v1/detect", files={"image": png(8, 8)})
        assert r.status_code == 503 and "failed to load" in r.json()["error"]["message"]
        assert "/secret" not in r.text and client.get("/readyz").status_code == 503


def test_unexpected_errors_carry_no_raw_text(tmp_path: Path) -> None:
    def explode() -> list[Any]:
        raise RuntimeError("password=hunter2 at /srv/secret")

    with TestClient(
        app_with(tmp_path, lambda s: FakeAnalyzer(explode)), raise_server_exceptions=False
    ) as client:
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
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
                calls = [client.post("/v1/detect", files={"image": png(8, 8)}) for _ in range(4)]
                responses = await asyncio.gather(*calls)
                assert all(
                    r.json()["error"]["code"] == "overloaded" for r in responses if r.status_code == 429
                )
                return sorted(r.status_code for r in responses)

    assert asyncio.run(burst()) == [200, 200, 429, 429]


def test_body_limit_from_content_length(tmp_path: Path) -> None:
    with TestClient(app_with(tmp_path, lambda s: FakeAnalyzer(), max_upload_bytes=1000)) as client:
        r = client.post("/v1/detect", files={"image": b"x" * 2000})
        assert r.status_code == 413 and r.json()["error"]["code"] == "payload_too_large"
        assert client.post("/v1/detect", files={"image": png(8, 8)}).status_code == 200


def test_model_work_runs_off_the_event_loop(tmp_path: Path) -> None:
    def slow() -> list[Any]:
        time.sleep(1.0)
        return []

    app = app_with(tmp_path, lambda s: FakeAnalyzer(slow))

    async def probe() -> float:
        async with app.router.lifespan_context(app):
            await app.state.model_loaded.wait()
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
                busy = asyncio.create_task(client.post("/v1/detect", files={"image": png(8, 8)}))
                await asyncio.sleep(0.2)  # the detection is now sleeping in a worker thread
                start = time.perf_counter()
                assert (await client.get("/healthz")).status_code == 200
                elapsed = time.perf_counter() - start
                assert not busy.done()
                assert (await busy).status_code == 200
                return elapsed

    assert asyncio.run(probe()) < 0.5
