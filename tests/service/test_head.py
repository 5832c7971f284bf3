"""``HEAD`` on the GET routes (service/head.py), through real HTTP clients against the real app (a fake analyzer
stands in for the model): the GET's status and headers with no body, the same auth and rate limit as the GET,
405 where the path has no GET, no HEAD operation in the OpenAPI document; and on the wire, through uvicorn."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from bench.serverproc import free_port
from service.keys import KeyStore
from tests.service.fakes import FakeAnalyzer, app_with, local
from tests.service.helpers import serving, wait_until

SAME_HEADERS = ("content-type", "content-length", "cache-control", "content-security-policy", "x-frame-options")
"""Headers a HEAD answer must carry exactly as the GET's (when the GET has them)."""


def admin_key(tmp_path: Path) -> str:
    store = KeyStore(tmp_path / "data")
    try:
        return store.create(scope="admin", name="ops")[1]
    finally:
        store.close()


def assert_like_get(client: TestClient, path: str, **kwargs: Any) -> Any:
    """HEAD ``path`` answers with the GET's status and headers and no body; the HEAD response. (``/metrics``
    grows between the two requests: its length is compared no further than being there.)"""
    get, head = client.get(path, **kwargs), client.head(path, **kwargs)
    assert head.status_code == get.status_code, path
    for name in SAME_HEADERS:
        if path == "/metrics" and name == "content-length":
            assert name in head.headers
            continue
        assert head.headers.get(name) == get.headers.get(name), (path, name)
    assert head.content == b"", path
    return head


def test_head_answers_like_get_without_a_body(tmp_path: Path) -> None:
    with local(app_with(tmp_path, lambda s: FakeAnalyzer())) as client:
        wait_until(lambda: client.get("/readyz").status_code == 200)
        for path in ("/healthz", "/readyz", "/metrics", "/", "/docs", "/openapi.json", "/static/app.js"):
            head = assert_like_get(client, path)
            assert head.status_code == 200 and int(head.headers["content-length"]) > 0, path
        assert assert_like_get(client, "/").headers["content-type"].startswith("text/html")
        assert assert_like_get(client, "/healthz").headers["content-type"] == "application/json"
        assert assert_like_get(client, "/v1/subjects").status_code == 200  # loopback, no key made yet
        assert assert_like_get(client, "/v1/subjects/nope").status_code == 404
        assert assert_like_get(client, "/nowhere").status_code == 404
        # a path without a GET keeps its 405, with the methods it has
        for path in ("/v1/detect", "/v1/identify"):
            head = client.head(path)
            assert head.status_code == 405 and head.headers["allow"] == "POST" and head.content == b"", path
        metrics = client.get("/metrics").text
    assert 'facerec_http_requests_total{method="HEAD",route="/healthz",status="200"}' in metrics
    assert 'facerec_http_requests_total{method="HEAD",route="/v1/detect",status="405"}' in metrics


def test_head_meets_the_gets_auth_and_rate_limit(tmp_path: Path) -> None:
    key = admin_key(tmp_path)
    with local(app_with(tmp_path, lambda s: FakeAnalyzer())) as client:
        anonymous = assert_like_get(client, "/v1/subjects")  # a key exists: none sent is a 401, as for GET
        assert anonymous.status_code == 401 and anonymous.headers["content-type"] == "application/json"
        assert assert_like_get(client, "/v1/subjects", headers={"X-API-Key": "wrong"}).status_code == 401
        ok = assert_like_get(client, "/v1/subjects", headers={"X-API-Key": key})
        assert ok.status_code == 200 and ok.headers["content-type"] == "application/json"
        assert assert_like_get(client, "/v1/subjects/nope", headers={"X-API-Key": key}).status_code == 404
    app = app_with(tmp_path, lambda s: FakeAnalyzer(), rate_limit_per_minute=6, rate_limit_burst=2)
    with local(app) as client:
        auth = {"X-API-Key": key}
        # one bucket for GET and HEAD: the GET and the HEAD use up the burst of 2
        assert client.get("/v1/subjects", headers=auth).status_code == 200
        assert client.head("/v1/subjects", headers=auth).status_code == 200
        limited = client.head("/v1/subjects", headers=auth)
        assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1 and limited.content == b""
        assert client.get("/v1/subjects", headers=auth).status_code == 429


def test_openapi_has_no_head_operations(tmp_path: Path) -> None:
    with local(app_with(tmp_path, lambda s: FakeAnalyzer())) as client:
        spec = client.get("/openapi.json").json()
    methods = {method for item in spec["paths"].values() for method in item}
    assert "get" in methods and "head" not in methods


def test_the_app_itself_sends_no_body_on_head(tmp_path: Path) -> None:
    """Straight through ASGI (the test client and uvicorn drop a HEAD body themselves): the app sends none."""
    app = app_with(tmp_path, lambda s: FakeAnalyzer())

    async def call(path: str) -> list[dict[str, Any]]:
        sent: list[dict[str, Any]] = []
        requested, answered = False, asyncio.Event()

        async def receive() -> dict[str, Any]:  # the request, then a disconnect once the answer is complete
            nonlocal requested
            if not requested:
                requested = True
                return {"type": "http.request", "body": b"", "more_body": False}
            await answered.wait()
            return {"type": "http.disconnect"}

        async def send(message: Any) -> None:
            sent.append(message)
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                answered.set()

        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "HEAD",
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "root_path": "",
            "query_string": b"",
            "headers": [(b"host", b"127.0.0.1:8000")],
            "client": ("127.0.0.1", 50000),
            "server": ("127.0.0.1", 8000),
            "state": {},
        }
        await app(scope, receive, send)
        return sent

    for path in ("/", "/healthz", "/docs"):
        start, *body = asyncio.run(call(path))
        assert start["type"] == "http.response.start" and start["status"] == 200, path
        headers = dict(start["headers"])
        assert int(headers[b"content-length"]) > 0, path
        assert body == [{"type": "http.response.body", "body": b"", "more_body": False}], path


@pytest.fixture
def port(tmp_path: Path) -> Iterator[int]:
    """A real uvicorn serving the app on loopback."""
    port = free_port()
    with serving(app_with(tmp_path, lambda s: FakeAnalyzer()), port):
        yield port


def test_head_on_the_wire_then_get_on_the_same_connection(port: int) -> None:
    """``curl -I``-like: a HEAD's answer is headers only, so the next answer on the keep-alive connection follows
    at once and intact."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        for path in ("/healthz", "/"):
            sock.sendall(f"HEAD {path} HTTP/1.1\r\nHost: x\r\n\r\nGET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            data = b""
            while b"\r\n\r\n" not in data or data.count(b"HTTP/1.1 ") < 2 or not _complete(data):
                chunk = sock.recv(65536)
                assert chunk, f"connection closed early: {data!r}"
                data += chunk
            head, rest = data.split(b"\r\n\r\n", 1)
            assert head.startswith(b"HTTP/1.1 200"), head
            assert rest.startswith(b"HTTP/1.1 200"), f"HEAD {path} sent a body: {rest[:80]!r}"
            get_head, get_body = rest.split(b"\r\n\r\n", 1)
            length = _length(head)
            assert length == _length(get_head) == len(get_body) > 0, path


def _length(head: bytes) -> int:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    raise AssertionError(f"no content-length in {head!r}")


def _complete(data: bytes) -> bool:
    """Whether ``data`` holds the HEAD's headers and the whole GET answer after them."""
    parts = data.split(b"\r\n\r\n", 2)
    if len(parts) < 3:
        return False
    return len(parts[2]) >= _length(parts[1])
