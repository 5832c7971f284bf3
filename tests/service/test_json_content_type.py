"""The JSON-body routes (subjects, cluster naming and merging, streams) answer a body sent as something else
(text/plain, a form, multipart) with 415 ``unsupported_media_type``, as the error table says and as the image
routes do; a JSON body with a bad field stays a 422 ``validation_error``. Found by ``bench/soak_mixed.py``."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.service.fakes import FakeAnalyzer, app_with, local

NOT_JSON = [
    {"content": b"name=x", "headers": {"content-type": "text/plain"}},
    {"data": {"name": "x"}},
    {"files": {"name": ("n.txt", b"x")}},
    {"content": b"<name>x</name>", "headers": {"content-type": "application/xml"}},
]


@pytest.mark.parametrize("kw", NOT_JSON, ids=["text", "form", "multipart", "xml"])
def test_a_json_route_refuses_other_bodies_with_415(tmp_path: Path, kw: dict) -> None:
    with local(app_with(tmp_path, lambda s: FakeAnalyzer(), photo_library=True)) as client:
        sid = client.post("/v1/subjects", json={"name": "Ada"}).json()["id"]
        for method, path in [
            ("POST", "/v1/subjects"),
            ("PATCH", f"/v1/subjects/{sid}"),
            ("POST", "/v1/clusters/1/name"),
            ("POST", "/v1/clusters/1/merge"),
            ("POST", "/v1/streams"),
            ("PATCH", "/v1/streams/1"),
        ]:
            r = client.request(method, path, **kw)
            assert r.status_code == 415, (method, path, r.text)
            assert r.json()["error"]["code"] == "unsupported_media_type", r.text


def test_json_bodies_keep_their_422(tmp_path: Path) -> None:
    with local(app_with(tmp_path, lambda s: FakeAnalyzer())) as client:
        broken = {"content": b"{", "headers": {"content-type": "application/json"}}
        for kw in ({"json": {"nam": "x"}}, {"json": [1]}, broken):
            r = client.post("/v1/subjects", **kw)
            assert r.status_code == 422 and r.json()["error"]["code"] == "validation_error", r.text
        r = client.post("/v1/subjects", content=b'{"nam": 1}', headers={"content-type": "application/merge-patch+json"})
        assert r.status_code == 422, r.text
        assert client.post("/v1/subjects", json={"name": "x"}).status_code == 201


def test_the_image_routes_keep_their_own_422_on_multipart(tmp_path: Path) -> None:
    """A multipart request to an image route with a wrong field is its own 422, not the JSON routes' 415."""
    with local(app_with(tmp_path, lambda s: FakeAnalyzer(), photo_library=True)) as client:
        for path in ("/v1/identify", "/v1/detect", "/v1/verify", "/v1/search", "/v1/photos"):
            r = client.post(path, files={"img": ("a.jpg", b"\xff\xd8\xff", "image/jpeg")})
            assert r.status_code == 422 and r.json()["error"]["code"] == "validation_error", (path, r.text)
