"""Fast tests of the service's security surface with fake analyzers (no model): the rate limit, CORS, the
body limit, error bodies without internals, the scope of /v1/embed, bounded pagination and the audit log."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from service.audit import AuditLog, cli_actor
from service.keys import KeyStore
from service.ratelimit import MAX_CALLER_CHARS, RateLimited, RateLimiter, bucket_id
from tests.service.fakes import LOCAL_URL, EmbeddingAnalyzer, FakeAnalyzer, app_with, local
from tests.service.helpers import png
from tests.service.server import REPO


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class AnalyzeAnalyzer(FakeAnalyzer):
    """A FakeAnalyzer that also answers /v1/embed (no faces)."""

    def analyze(self, image: bytes) -> list[Any]:
        return []


def keys(tmp_path: Path, *scopes: str) -> list[str]:
    store = KeyStore(tmp_path / "data")
    tokens = [store.create(scope=s, name=f"{s}-{i}")[1] for i, s in enumerate(scopes)]  # type: ignore[arg-type]
    store.close()
    return tokens


# ---- rate limit ----------------------------------------------------------------------------------------


def test_token_bucket() -> None:
    clock = Clock()
    limiter = RateLimiter(per_minute=60, burst=3, clock=clock)
    assert [limiter.acquire("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.acquire("a") == pytest.approx(1.0)
    assert limiter.acquire("b") == 0.0  # buckets are per caller
    clock.now += 0.5
    assert limiter.acquire("a") == pytest.approx(0.5)
    clock.now += 0.5
    assert limiter.acquire("a") == 0.0 and limiter.acquire("a") > 0
    clock.now += 3600  # refills up to the burst, no further
    assert [limiter.acquire("a") for _ in range(4)][-1] > 0
    off = RateLimiter(per_minute=0, burst=1, clock=clock)
    assert all(off.acquire("a") == 0.0 for _ in range(100))


def test_rate_limit_per_key_with_retry_after(tmp_path: Path) -> None:
    first, second = keys(tmp_path, "recognize", "recognize")
    app = app_with(tmp_path, lambda s: FakeAnalyzer(), rate_limit_per_minute=6, rate_limit_burst=2)
    with TestClient(app) as client:

        def detect(token: str) -> Any:
            return client.post("/v1/detect", files={"image": png(8, 8)}, headers={"X-API-Key": token})

        assert [detect(first).status_code for _ in range(2)] == [200, 200]
        r = detect(first)
        assert r.status_code == 429
        assert r.json() == {"error": {"code": "rate_limited", "message": r.json()["error"]["message"]}}
        retry = r.headers["Retry-After"]
        assert retry.isdigit() and 1 <= int(retry) <= 10
        assert detect(second).status_code == 200  # another key has its own bucket
        for path in ("/healthz", "/readyz", "/metrics", "/openapi.json", "/docs", "/"):  # exempt
            assert all(client.get(path).status_code == 200 for _ in range(5)), path
        # a wrong key is limited per client IP, so guessing keys is limited too
        bad = [client.get("/v1/subjects", headers={"X-API-Key": "frk_x_y"}).status_code for _ in range(3)]
        assert bad == [401, 401, 429]


def test_rate_limit_for_the_keyless_local_user(tmp_path: Path) -> None:
    app = app_with(tmp_path, lambda s: FakeAnalyzer(), rate_limit_per_minute=60, rate_limit_burst=3)
    with local(app) as client:
        codes = [client.get("/v1/subjects").status_code for _ in range(4)]
        assert codes == [200, 200, 200, 429]
    with TestClient(app, base_url=LOCAL_URL, client=("127.0.0.2", 50000)) as other:
        assert other.get("/v1/subjects").status_code == 200  # per client IP


# ---- CORS ----------------------------------------------------------------------------------------------


def preflight(client: TestClient, origin: str) -> Any:
    return client.options(
        "/v1/subjects",
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "x-api-key,content-type",
        },
    )


def test_cors_is_closed_by_default(tmp_path: Path) -> None:
    with local(app_with(tmp_path, lambda s: FakeAnalyzer())) as client:
        r = preflight(client, "https://evil.example")
        assert r.status_code == 405 and not any(h.startswith("access-control-") for h in r.headers)
        r = client.get("/v1/subjects", headers={"Origin": "https://evil.example"})
        assert r.status_code == 200 and not any(h.startswith("access-control-") for h in r.headers)


def test_every_response_tells_browsers_not_to_sniff_or_frame_it(tmp_path: Path) -> None:
    with local(app_with(tmp_path, lambda s: FakeAnalyzer())) as client:
        for r in (client.get("/v1/subjects"), client.get("/v1/nope"), client.get("/"), client.get("/static/app.js")):
            assert r.headers["x-content-type-options"] == "nosniff", r.url
            assert r.headers["x-frame-options"] == "DENY" and r.headers["referrer-policy"] == "no-referrer"
        page = client.get("/").headers["content-security-policy"]
        assert "script-src 'self'" in page and "frame-ancestors 'none'" in page and "unsafe" not in page


def test_cors_allows_exactly_the_configured_origins(tmp_path: Path) -> None:
    origins = "https://app.example, https://admin.example"
    with local(app_with(tmp_path, lambda s: FakeAnalyzer(), cors_origins=origins)) as client:
        for origin in ("https://app.example", "https://admin.example"):
            r = preflight(client, origin)
            assert r.status_code == 200 and r.headers["access-control-allow-origin"] == origin
            assert "x-api-key" in r.headers["access-control-allow-headers"].lower()
            r = client.get("/v1/subjects", headers={"Origin": origin})
            assert r.headers["access-control-allow-origin"] == origin
        r = preflight(client, "https://evil.example")
        assert r.status_code == 400 and "access-control-allow-origin" not in r.headers
        r = client.get("/v1/subjects", headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in r.headers


@pytest.mark.parametrize(
    "entry", ["https://app.example/", "app.example", "https://app.example/ui", "ftp://app.example"]
)
def test_a_cors_entry_that_is_not_an_origin_is_refused_at_start(entry: str) -> None:
    """A browser's Origin has no path: ``https://app.example/`` matched nothing, and that site's every request
    was refused with no word at start."""
    from service.cli import app as cli

    env = {"FACEREC_CORS_ORIGINS": f"https://admin.example, {entry}, *"}
    result = CliRunner().invoke(cli, ["keys", "list", "--data", "/nonexistent"], env=env)
    assert result.exit_code == 2 and len(result.output.splitlines()) == 1, result.output
    assert result.output.startswith(f"error: FACEREC_CORS_ORIGINS: {entry!r} is not an origin"), result.output


def test_a_trailing_slash_is_a_404_not_a_redirect_built_from_the_host_header(tmp_path: Path) -> None:
    """It was a 307 to a Location made of the request's Host header and scheme: behind a TLS proxy (or a cache
    keyed on the path), a client that followed it sent its X-API-Key over plain http, or to the host named."""
    (admin,) = keys(tmp_path, "admin")
    with TestClient(app_with(tmp_path, lambda s: FakeAnalyzer()), follow_redirects=False) as client:
        for method, path in (("GET", "/v1/subjects/"), ("POST", "/v1/subjects/"), ("POST", "/v1/identify/")):
            r = client.request(method, path, headers={"Host": "elsewhere.example", "X-API-Key": admin})
            assert r.status_code == 404 and "location" not in r.headers, (method, path, r.headers)
            assert r.json()["error"]["code"] == "not_found"
        assert client.get("/v1/subjects", headers={"X-API-Key": admin}).status_code == 200


# ---- body limit, error bodies ----------------------------------------------------------------------------


def test_body_limit_refuses_before_reading_the_body(tmp_path: Path) -> None:
    """With a Content-Length over the limit the answer is 413 without one body message being received."""
    import asyncio

    app = app_with(tmp_path, lambda s: FakeAnalyzer(), max_upload_bytes=1000)
    received: list[Any] = []
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        received.append(True)
        return {"type": "http.request", "body": b"x" * 2000, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/detect",
        "raw_path": b"/v1/detect",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"content-length", str(10**9).encode()), (b"content-type", b"multipart/form-data; boundary=x")],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }
    asyncio.run(app(scope, receive, send))
    assert sent[0]["status"] == 413 and received == []
    assert json.loads(sent[1]["body"])["error"]["code"] == "payload_too_large"


def test_no_stack_traces_or_internal_paths_in_responses(tmp_path: Path) -> None:
    def explode() -> list[Any]:
        raise RuntimeError(f"boom in {REPO}/service/secret.py")

    app = app_with(tmp_path, lambda s: FakeAnalyzer(explode), max_upload_bytes=5000)
    markers = ("Traceback", 'File "', str(REPO), str(tmp_path), "site-packages", ".py")
    with local(app, raise_server_exceptions=False) as client:
        responses = [
            client.post("/v1/detect", files={"image": png(8, 8)}),  # 500
            client.get("/v1/nope"),  # 404
            client.put("/v1/subjects"),  # 405
            client.get("/v1/subjects/none"),  # 404 from the gallery
            client.post("/v1/detect", content=b"{bad", headers={"Content-Type": "application/json"}),
            client.post("/v1/detect", content=b"--x\r\nbroken", headers={"Content-Type": "multipart/form-data"}),
            client.post("/v1/detect", content=b"abc", headers={"Content-Type": "text/plain"}),
            client.post("/v1/detect", json={"image_base64": "!!!"}),
            client.post("/v1/detect", files={"image": b"not an image"}),
            client.post("/v1/detect", files={"image": b"x" * 6000}),
            client.post("/v1/subjects", json={"name": ""}),
            client.get("/v1/subjects", params={"limit": "x"}),
            client.get("/v1/faces/notanint"),
        ]
        for r in responses:
            assert r.status_code >= 400, r.text
            body = r.json()
            assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, r.text
            assert not any(m in r.text for m in markers), r.text
        assert responses[0].status_code == 500 and responses[0].json()["error"]["code"] == "internal_error"


# ---- embeddings only for admin; bounded pagination ---------------------------------------------------------


def test_the_key_is_checked_before_the_body_is_read(tmp_path: Path) -> None:
    """FastAPI parses a declared JSON body before any dependency: broken JSON was a 422 to anyone, not rate
    limited, on the routes with one (subjects, streams, clusters). Every route that takes a body, any body."""
    (recognize,) = keys(tmp_path, "recognize")
    app = app_with(tmp_path, lambda s: FakeAnalyzer(), rate_limit_per_minute=60, rate_limit_burst=1000)
    broken, json_type = b'{"name": ', {"Content-Type": "application/json"}
    with TestClient(app) as client:
        routes = [
            (method.upper(), re.sub(r"\{[^}]+\}", "1", path))
            for path, item in client.get("/openapi.json").json()["paths"].items()
            for method, op in item.items()
            if "requestBody" in op
        ]
        assert ("POST", "/v1/subjects") in routes and ("POST", "/v1/streams") in routes
        for method, path in routes:
            r = client.request(method, path, content=broken, headers=json_type)
            assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized", (method, path, r.text)
        for method, path in (("POST", "/v1/subjects"), ("PATCH", "/v1/subjects/1"), ("POST", "/v1/streams")):
            r = client.request(method, path, content=broken, headers={**json_type, "X-API-Key": recognize})
            assert r.status_code == 403, (method, path, r.text)
    with TestClient(app_with(tmp_path, lambda s: FakeAnalyzer(), rate_limit_burst=2)) as limited:
        codes = [limited.post("/v1/subjects", content=broken, headers=json_type).status_code for _ in range(3)]
    assert codes == [401, 401, 429]


def test_embeddings_only_for_admin_keys(tmp_path: Path) -> None:
    admin, recognize = keys(tmp_path, "admin", "recognize")
    with TestClient(app_with(tmp_path, lambda s: AnalyzeAnalyzer())) as client:

        def embed(headers: dict[str, str]) -> Any:
            return client.post("/v1/embed", files={"image": png(8, 8)}, headers=headers)

        assert embed({}).status_code == 401
        r = embed({"X-API-Key": recognize})
        assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden" and "embedding" not in r.json()
        assert client.post("/v1/detect", files={"image": png(8, 8)}, headers={"X-API-Key": recognize}).is_success
        r = embed({"X-API-Key": admin})
        assert r.status_code == 200 and r.json() == {"model_id": "fake", "faces": []}


def test_subject_listing_is_paginated_and_bounded(tmp_path: Path) -> None:
    with local(app_with(tmp_path, lambda s: FakeAnalyzer())) as client:
        made = {client.post("/v1/subjects", json={"name": f"p{i}"}).json()["id"] for i in range(5)}
        for bad in ("0", "-1", "501", "100000"):
            r = client.get("/v1/subjects", params={"limit": bad})
            assert r.status_code == 422 and r.json()["error"]["code"] == "validation_error", bad
        assert len(client.get("/v1/subjects", params={"limit": 500}).json()["items"]) == 5
        assert len(client.get("/v1/subjects").json()["items"]) == 5  # default 50
        seen: list[str] = []
        cursor = None
        for _ in range(5):
            page = client.get("/v1/subjects", params={"limit": 2, **({"cursor": cursor} if cursor else {})}).json()
            assert len(page["items"]) <= 2
            seen += [s["id"] for s in page["items"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert cursor is None and len(seen) == 5 and set(seen) == made
        spec = client.get("/openapi.json").json()
        limit = next(p for p in spec["paths"]["/v1/subjects"]["get"]["parameters"] if p["name"] == "limit")
        assert limit["schema"]["maximum"] == 500


# ---- audit log -------------------------------------------------------------------------------------------


def test_audit_log_of_gallery_changes(tmp_path: Path) -> None:
    (admin,) = keys(tmp_path, "admin")
    image = b"\x05" + b"secret-image-bytes" * 10
    app = app_with(tmp_path, lambda s: EmbeddingAnalyzer())
    with TestClient(app) as client:
        h = {"X-API-Key": admin}
        sid = client.post("/v1/subjects", json={"name": "Ada", "metadata": {"team": "math"}}, headers=h).json()["id"]
        assert client.patch(f"/v1/subjects/{sid}", json={"name": "Ada King"}, headers=h).status_code == 200
        assert client.patch(f"/v1/subjects/{sid}", json={}, headers=h).status_code == 200  # no change: no record
        enrolled = client.post(f"/v1/subjects/{sid}/faces", files={"images": image}, headers=h)
        assert enrolled.status_code == 201, enrolled.text
        face_id = enrolled.json()["faces"][0]["id"]
        again = client.post(f"/v1/subjects/{sid}/faces", files={"images": image}, headers=h)  # a duplicate only
        assert again.status_code == 200
        assert client.delete(f"/v1/faces/{face_id}", headers=h).status_code == 204
        assert client.delete(f"/v1/subjects/{sid}", headers=h).status_code == 204
        assert client.delete(f"/v1/subjects/{sid}", headers=h).status_code == 404  # a failure is not recorded
    path = tmp_path / "data" / "audit.log"
    text = path.read_text()
    records = [json.loads(line) for line in text.splitlines()]
    key_id = admin.split("_")[1]
    actor = {"key_id": key_id, "name": "admin-0"}
    assert [(r["action"], r["actor"], r["target"]) for r in records] == [
        ("subject.create", actor, {"subject_id": sid}),
        ("subject.update", actor, {"subject_id": sid, "fields": ["name"]}),
        ("face.enroll", actor, {"subject_id": sid, "face_ids": [face_id]}),
        ("face.delete", actor, {"face_id": face_id}),
        ("subject.delete", actor, {"subject_id": sid}),
    ]
    assert records[2]["count"] == 1 and all(r["via"] == "api" and r["ts"].endswith("+00:00") for r in records)
    for secret in ("secret-image", base64.b64encode(image).decode()[:20], admin, "embedding", "Ada", "math"):
        assert secret not in text, secret


def test_audit_log_of_the_local_user_and_of_key_changes(tmp_path: Path) -> None:
    from service.cli import app as cli

    with local(app_with(tmp_path, lambda s: FakeAnalyzer())) as client:
        sid = client.post("/v1/subjects", json={"name": "x"}).json()["id"]
    data = str(tmp_path / "data")
    created = CliRunner().invoke(cli, ["keys", "create", "--scope", "recognize", "--json", "--data", data])
    assert created.exit_code == 0, created.output
    key = json.loads(created.stdout)
    assert CliRunner().invoke(cli, ["keys", "revoke", key["id"], "--data", data]).exit_code == 0
    assert CliRunner().invoke(cli, ["keys", "revoke", "nope", "--data", data]).exit_code == 1
    records = AuditLog(tmp_path / "data").tail(10)
    assert [(r["actor"], r["action"], r["target"], r["via"]) for r in records] == [
        ("local", "subject.create", {"subject_id": sid}, "api"),
        (cli_actor(), "key.create", {"key_id": key["id"], "scope": "recognize", "expires_at": None}, "cli"),
        (cli_actor(), "key.revoke", {"key_id": key["id"], "scope": "recognize"}, "cli"),
    ]
    assert key["token"] not in (tmp_path / "data" / "audit.log").read_text()
    tail = CliRunner().invoke(cli, ["audit", "tail", "-n", "2", "--json", "--data", data])
    assert tail.exit_code == 0 and [json.loads(line)["action"] for line in tail.stdout.splitlines()] == [
        "key.create",
        "key.revoke",
    ]
    human = CliRunner().invoke(cli, ["audit", "tail", "--data", data])
    assert human.exit_code == 0 and "key.revoke" in human.stdout and f"key_id={key['id']}" in human.stdout
    log = tmp_path / "data" / "audit.log"
    with log.open("ab") as f:  # damaged lines: not UTF-8, JSON that is not an object
        f.write(b'\xff\xfe broken\n[1, 2]\n"text"\n')
    damaged = CliRunner().invoke(cli, ["audit", "tail", "-n", "6", "--data", data])
    assert damaged.exit_code == 0 and "key.revoke" in damaged.stdout, damaged.output
    log.rename(log.with_suffix(".kept"))
    log.mkdir()
    unreadable = CliRunner().invoke(cli, ["audit", "tail", "--data", data])
    assert unreadable.exit_code == 1 and "error: storage_unavailable: " in unreadable.output, unreadable.output


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full (a file whose writes fail with ENOSPC)")
def test_an_audit_log_that_cannot_be_written_is_a_507_or_503_not_a_500(tmp_path: Path) -> None:
    log = tmp_path / "data" / "audit.log"
    log.parent.mkdir(parents=True)
    log.symlink_to("/dev/full")  # every write: ENOSPC, as on a full disk
    with local(app_with(tmp_path, lambda s: FakeAnalyzer()), raise_server_exceptions=False) as client:
        full = client.post("/v1/subjects", json={"name": "Ada"})
        assert full.status_code == 507, full.text
        assert full.json()["error"]["code"] == "insufficient_storage"
        assert "the change was made" in full.json()["error"]["message"]
        (made,) = client.get("/v1/subjects").json()["items"]  # the message is true: the subject exists
        log.unlink()
        log.mkdir()  # not a file: the OS refuses it (EISDIR)
        refused = client.delete(f"/v1/subjects/{made['id']}")
        assert refused.status_code == 503 and refused.json()["error"]["code"] == "storage_unavailable", refused.text
        assert "the change was made" in refused.json()["error"]["message"]


def test_long_caller_ids_are_bucketed_by_digest() -> None:
    assert bucket_id("key:abc") == "key:abc"
    long_a, long_b = "ip:" + "a" * 5000, "ip:" + "a" * 4999 + "b"
    assert len(bucket_id(long_a)) <= MAX_CALLER_CHARS and bucket_id(long_a) != bucket_id(long_b)
    limiter = RateLimiter(per_minute=60, burst=1)
    limiter.check(long_a)
    with pytest.raises(RateLimited):
        limiter.check(long_a)
    assert all(len(k) <= MAX_CALLER_CHARS for k in limiter._buckets)
