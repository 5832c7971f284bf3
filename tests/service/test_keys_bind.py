"""API keys and when they are required: the key store, loopback detection, the bind check, per-request
decisions from the real addresses, and the key store closed when start-up fails. Fake analyzer, no model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from service.addresses import is_loopback
from service.app import KeysRequired, check_bind, create_app
from service.config import Settings
from service.gallery import StorageUnavailable
from service.keys import KeyNotFound, KeyStore
from tests.service.fakes import LOCAL_URL, FakeAnalyzer, app_with, local
from tests.service.helpers import png


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
    with local(app) as client:
        assert client.get("/v1/subjects").status_code == 200  # loopback, no keys: the local user
        store = KeyStore(tmp_path / "data")
        _, token = store.create(scope="recognize")
        assert client.get("/v1/subjects").json()["error"]["code"] == "unauthorized"
        assert client.get("/v1/subjects", headers={"X-API-Key": token}).status_code == 403
        assert client.post("/v1/detect", files={"image": png(8, 8)}, headers={"X-API-Key": token}).status_code == 200
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


def test_keys_are_decided_per_request_from_the_real_addresses(tmp_path: Path) -> None:
    """FACEREC_HOST says loopback, but only a connection loopback at both ends without proxy headers is local."""
    app = app_with(tmp_path, lambda s: FakeAnalyzer())  # settings.host is the default 127.0.0.1
    with local(app) as client:
        assert client.get("/v1/subjects").status_code == 200
        for header in ("X-Forwarded-For", "Forwarded", "X-Real-IP"):
            r = client.get("/v1/subjects", headers={header: "203.0.113.9"})
            assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized", header
    # the server socket is not loopback (uvicorn --host 0.0.0.0 reached on a LAN address)
    with TestClient(app, base_url="http://192.168.1.10:8000", client=("127.0.0.1", 50000)) as client:
        assert client.get("/v1/subjects").status_code == 401
    # a remote peer on a loopback socket (e.g. a tunnel)
    with TestClient(app, base_url=LOCAL_URL, client=("203.0.113.9", 50000)) as client:
        assert client.get("/v1/subjects").status_code == 401
    with TestClient(app) as client:  # "testserver" / "testclient": not loopback
        assert client.get("/v1/subjects").status_code == 401
        assert client.get("/healthz").status_code == 200


def test_startup_failure_closes_the_key_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import service.bootstrap as bootstrap_module

    closed: list[bool] = []

    class Recording(KeyStore):
        def close(self) -> None:
            closed.append(True)
            super().close()

    monkeypatch.setattr(bootstrap_module, "KeyStore", Recording)
    app = app_with(tmp_path, lambda s: FakeAnalyzer(), host="0.0.0.0")
    with pytest.raises(KeysRequired), TestClient(app):
        pass
    assert closed == [True]

    def broken_gallery(_: Path) -> Any:
        raise OSError("disk gone")

    def fake_analyzer(_: Settings) -> Any:  # a stand-in with only what /v1/detect reads of a FaceAnalyzer
        return FakeAnalyzer()

    closed.clear()
    app = create_app(
        Settings(data=tmp_path / "data"),
        analyzer_factory=fake_analyzer,
        gallery_factory=broken_gallery,
    )
    with pytest.raises(StorageUnavailable, match="disk gone"), TestClient(app):  # the OS error, named
        pass
    assert closed == [True]
