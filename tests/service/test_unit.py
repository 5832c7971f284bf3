"""Fast tests of the service layers with a fake analyzer (no model): keys, auth modes, readiness, overload,
the 500 envelope and the body limit. The real pipeline is exercised by the server tests."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
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


LOCAL_URL = "http://127.0.0.1:8000"


def local(app: Any, **kwargs: Any) -> TestClient:
    """A client whose connection is loopback at both ends (server socket and peer), like a local browser."""
    return TestClient(app, base_url=LOCAL_URL, client=("127.0.0.1", 50000), **kwargs)


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

    with local(app_with(tmp_path, broken)) as client:
        time.sleep(0.2)
        r = client.post("/v1/detect", files={"image": png(8, 8)})
        assert r.status_code == 503 and "failed to load" in r.json()["error"]["message"]
        assert "/secret" not in r.text and client.get("/readyz").status_code == 503


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
    def slow() -> list[Any]:
        time.sleep(1.0)
        return []

    app = app_with(tmp_path, lambda s: FakeAnalyzer(slow))

    async def probe() -> float:
        async with app.router.lifespan_context(app):
            await app.state.model_loaded.wait()
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url=LOCAL_URL) as client:
                busy = asyncio.create_task(client.post("/v1/detect", files={"image": png(8, 8)}))
                await asyncio.sleep(0.2)  # the detection is now sleeping in a worker thread
                start = time.perf_counter()
                assert (await client.get("/healthz")).status_code == 200
                elapsed = time.perf_counter() - start
                assert not busy.done()
                assert (await busy).status_code == 200
                return elapsed

    assert asyncio.run(probe()) < 0.5


# ---- review fixes ------------------------------------------------------------------------------------


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

    closed.clear()
    app = create_app(
        Settings(data=tmp_path / "data"),
        analyzer_factory=lambda s: FakeAnalyzer(),
        gallery_factory=broken_gallery,
    )
    with pytest.raises(OSError, match="disk gone"), TestClient(app):
        pass
    assert closed == [True]


class FakeFace:
    """What enrol, verify and identify read of a face."""

    def __init__(self, embedding: Any) -> None:
        self.embedding = np.asarray(embedding, np.float32)
        self.box = SimpleNamespace(to_dict=lambda: {"x": 0.0, "y": 0.0, "width": 100.0, "height": 100.0})
        self.quality = SimpleNamespace(face_size=100.0, confidence=0.99, sharpness=50.0)
        self.crop = np.full((160, 160, 3), 128, np.uint8)


def unit(i: int) -> Any:
    v = np.zeros(128, np.float32)
    v[i] = 1.0
    return v


class EmbeddingAnalyzer:
    """``single_face`` returns the embedding ``unit(first byte)``; ``on_analyse`` runs before it returns."""

    model_id = "fake"
    threshold = 1.0

    def __init__(self, on_analyse: Callable[[], None] = lambda: None) -> None:
        self.on_analyse = on_analyse
        self.calls = 0

    def single_face(self, data: bytes, *, largest: bool = False, check_quality: bool = True) -> FakeFace:
        self.calls += 1
        self.on_analyse()
        return FakeFace(unit(data[0]))


def test_concurrent_enrolment_of_one_image_stores_it_once(tmp_path: Path) -> None:
    from service import recognition
    from service.gallery import open_gallery

    gallery = open_gallery(tmp_path / "g")
    try:
        sid = gallery.create_subject(name="a").id
        barrier = threading.Barrier(2, timeout=10)  # both analyse before either stores
        analyzer = EmbeddingAnalyzer(on_analyse=barrier.wait)
        results: list[Any] = []

        def enrol() -> None:
            results.append(
                recognition.enroll(analyzer=analyzer, gallery=gallery, subject_id=sid, images=[b"\x03same"])  # type: ignore[arg-type]
            )

        threads = [threading.Thread(target=enrol) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(20)
        assert len(results) == 2 and analyzer.calls == 2
        assert len(gallery.list_faces(sid)) == 1
        stored = [r for r in results if r.faces]
        lost = [r for r in results if not r.faces]
        assert len(stored) == 1 and len(lost) == 1
        (rejection,) = lost[0].rejected
        assert rejection.code == "duplicate" and rejection.face_id == stored[0].faces[0].id
    finally:
        gallery.close()


def test_verify_subject_checks_for_faces_first_and_attributes_distances(tmp_path: Path) -> None:
    from embeddings.errors import NoFace
    from service import recognition
    from service.gallery import NewFace, open_gallery

    gallery = open_gallery(tmp_path / "g")
    try:
        empty = gallery.create_subject(name="empty").id

        def never() -> None:
            raise AssertionError("the image was analysed for a subject without faces")

        with pytest.raises(NoFace):
            recognition.verify_subject(
                analyzer=EmbeddingAnalyzer(never),  # type: ignore[arg-type]
                gallery=gallery,
                image=b"\x00",
                subject_id=empty,
                threshold=1.0,
            )
        sid = gallery.create_subject(name="s").id
        recs = gallery.add_faces(sid, [NewFace(embedding=unit(i), model_id="fake") for i in (0, 1, 2)])
        result = recognition.verify_subject(
            analyzer=EmbeddingAnalyzer(),  # type: ignore[arg-type]
            gallery=gallery,
            image=b"\x00",
            subject_id=sid,
            threshold=1.5,
        )
        assert result.distances is not None
        assert [d["face_id"] for d in result.distances] == [r.id for r in recs]
        assert [round(d["distance"], 4) for d in result.distances] == [0.0, 1.4142, 1.4142]
        assert result.distance == pytest.approx(2**0.5, abs=1e-4) and result.match is True
    finally:
        gallery.close()


def test_identify_threshold_policy() -> None:
    from service.gallery.calibration import false_identification_rate, threshold_for_fir
    from service.recognition import identify_threshold

    explicit = identify_threshold(requested=1.3, fixed=1.075, max_fir=0.01, gallery_size=70)
    assert (explicit.threshold, explicit.source) == (1.3, "request")
    off = identify_threshold(requested=None, fixed=1.075, max_fir=None, gallery_size=70)
    assert (off.threshold, off.source) == (1.075, "fixed")
    assert identify_threshold(requested=None, fixed=1.075, max_fir=0.0, gallery_size=70).source == "fixed"
    assert identify_threshold(requested=None, fixed=1.075, max_fir=0.01, gallery_size=0).source == "fixed"
    small = identify_threshold(requested=None, fixed=1.075, max_fir=0.01, gallery_size=1)
    assert threshold_for_fir(0.01, 1) > 1.075 and (small.threshold, small.source) == (1.075, "fixed")
    big = identify_threshold(requested=None, fixed=1.075, max_fir=0.01, gallery_size=70)
    assert big.source == "max_fir" and big.threshold == pytest.approx(threshold_for_fir(0.01, 70))
    assert 0.803 < big.threshold < 1.075  # the 5-celebrity acceptance margins: genuine <= 0.803, strangers >= 1.135
    assert false_identification_rate(big.threshold, 70) == pytest.approx(0.01, abs=1e-3)
    bigger = identify_threshold(requested=None, fixed=1.075, max_fir=0.01, gallery_size=1000)
    assert bigger.threshold < big.threshold  # tightens as the gallery grows


def test_identify_reports_the_threshold_it_used() -> None:
    from service import recognition
    from service.gallery import Candidate

    class Gallery:
        def subject_count(self) -> int:
            return 10

        def face_count(self, model_id: str) -> int:
            return {"fake": 70, "other": 5}.get(model_id, 0)

        def search(self, probes: Any, *, model_id: str, top_k: int) -> list[list[Candidate]]:
            return [[Candidate("s1", "someone", 7, 0.95, 1 - 0.95**2 / 2)] for _ in probes]

    class Analyzer(EmbeddingAnalyzer):
        threshold = 1.075

        def analyze(self, image: bytes) -> list[FakeFace]:
            return [FakeFace(unit(0))]

    def run(**kw: Any) -> recognition.IdentifyResult:
        return recognition.identify(analyzer=Analyzer(), gallery=Gallery(), image=b"x", top_k=3, **kw)  # type: ignore[arg-type]

    adaptive = run(threshold=None, fixed_threshold=1.075, max_fir=0.01)
    assert adaptive.threshold_source == "max_fir" and adaptive.gallery_faces == 70
    assert adaptive.threshold < 0.95 and adaptive.faces[0].match is None
    assert adaptive.estimated_fir == pytest.approx(0.01, abs=1e-3)
    fixed = run(threshold=None, fixed_threshold=1.075, max_fir=None)
    assert fixed.threshold_source == "fixed" and fixed.threshold == 1.075 and fixed.faces[0].match is not None
    assert fixed.estimated_fir is not None and fixed.estimated_fir > 0.1
    explicit = run(threshold=1.0, fixed_threshold=1.075, max_fir=0.01)
    assert (explicit.threshold, explicit.threshold_source) == (1.0, "request")
    assert explicit.faces[0].match is not None


def test_remote_style_enrolment_survives_a_refused_image_and_leaves_no_empty_subject(tmp_path: Path) -> None:
    from service.commands.backend import CliError
    from service.commands.enroll import run_enrollment

    class Backend:
        def __init__(self) -> None:
            self.subjects: dict[str, dict[str, Any]] = {}
            self.deleted: list[str] = []

        def all_subjects(self) -> list[dict[str, Any]]:
            return list(self.subjects.values())

        def create_subject(self, name: str) -> dict[str, Any]:
            sid = f"id{len(self.subjects)}"
            self.subjects[sid] = {"id": sid, "name": name}
            return self.subjects[sid]

        def delete_subject(self, subject_id: str) -> None:
            self.deleted.append(subject_id)
            del self.subjects[subject_id]

        def list_faces(self, subject_id: str) -> list[dict[str, Any]]:
            return []

        def enroll(self, subject_id: str, images: list[bytes], *, largest: bool) -> dict[str, Any]:
            if images[0].startswith(b"big"):
                raise CliError("POST -> 413 payload_too_large: too big", status=413, code="payload_too_large")
            if images[0].startswith(b"noface"):
                return {"faces": [], "rejected": [{"code": "no_face", "message": "no face"}]}
            return {"faces": [{"id": 1}], "rejected": []}

    folders: dict[str, list[Path]] = {}
    for person, files in {"good_one": [b"big1", b"ok"], "all_bad": [b"big2", b"noface"]}.items():
        (tmp_path / person).mkdir()
        folders[person] = []
        for i, content in enumerate(files):
            path = tmp_path / person / f"{i}.jpg"
            path.write_bytes(content)
            folders[person].append(path)
    backend = Backend()
    summary = run_enrollment(backend, folders, largest=False)  # type: ignore[arg-type]
    assert summary.enrolled == 1 and summary.subjects_created == 1
    assert sorted(r["code"] for r in summary.rejected) == [
        "no_face",
        "payload_too_large",
        "payload_too_large",
    ]
    assert [s["name"] for s in backend.subjects.values()] == ["good one"]
    assert len(backend.deleted) == 1 and summary.per_subject["all bad"]["id"] is None

    class Down(Backend):
        def enroll(self, subject_id: str, images: list[bytes], *, largest: bool) -> dict[str, Any]:
            raise CliError("cannot reach the server")

    with pytest.raises(CliError, match="cannot reach"):
        run_enrollment(Down(), folders, largest=False)  # type: ignore[arg-type]


def test_remote_backend_waits_out_429_then_succeeds() -> None:
    import httpx

    from service.commands.backend import RemoteBackend

    calls: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        if len(calls) < 3:
            return httpx.Response(
                429, headers={"Retry-After": "2"}, json={"error": {"code": "rate_limited", "message": "slow down"}}
            )
        return httpx.Response(200, json={"ok": True})

    backend = RemoteBackend("http://server.test", "k")
    backend.client = httpx.Client(base_url="http://server.test", transport=httpx.MockTransport(handler))
    slept: list[float] = []
    backend._sleep = slept.append
    assert backend._call("GET", "/v1/subjects") == {"ok": True}
    assert len(calls) == 3 and slept == [2.0, 2.0]
