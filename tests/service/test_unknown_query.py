"""A query parameter a route does not take is a 422, not ignored: ``GET /v1/subjects?limt=5`` answered the
default page and ``DELETE /v1/subjects/{id}?erase_photo_face=true`` erased without the photo faces, both 2xx.
Through the real app (a fake analyzer stands in for the model); the image routes' own refusal, which lists their
body fields, is tested in ``test_unknown_fields``."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from tests.service.fakes import FakeAnalyzer, app_with, local
from tests.service.helpers import wait_until
from tests.service.test_security import keys

IMAGE_ROUTES = {
    ("POST", "/v1/detect"),
    ("POST", "/v1/embed"),
    ("POST", "/v1/identify"),
    ("POST", "/v1/verify"),
    ("POST", "/v1/subjects/{subject_id}/faces"),
    ("POST", "/v1/live/frames"),
    ("POST", "/v1/photos"),
    ("POST", "/v1/search"),
}
"""The routes that read their own body and refuse every query parameter themselves."""


def refused(r: Any, name: str, takes: str) -> None:
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["code"] == "validation_error", r.text
    assert f"{name}: unknown query parameter; this endpoint {takes}" in error["message"], r.text


def v1_routes(client: TestClient) -> list[tuple[str, str, list[str]]]:
    """Every ``/v1`` operation of the API docs: method, path and the query parameters it declares."""
    return [
        (method.upper(), path, [p["name"] for p in op.get("parameters", []) if p["in"] == "query"])
        for path, item in client.get("/openapi.json").json()["paths"].items()
        if path.startswith("/v1/")
        for method, op in item.items()
    ]


def test_every_route_refuses_a_query_parameter_it_does_not_take(tmp_path: Path) -> None:
    """Each ``/v1`` operation with ``?bogus=1`` (its own parameters beside it): 401 without a key (the key is
    checked first), 422 naming ``bogus`` and what the route takes with one, and nothing changes."""
    (admin,) = keys(tmp_path, "admin")
    app = app_with(tmp_path, lambda s: FakeAnalyzer(), photo_library=True, photo_recluster_interval_s=0)
    with TestClient(app) as client:
        wait_until(lambda: client.get("/readyz").status_code == 200)
        sid = client.post("/v1/subjects", json={"name": "Ada"}, headers={"X-API-Key": admin}).json()["id"]
        routes = [r for r in v1_routes(client) if (r[0], r[1]) not in IMAGE_ROUTES]
        assert {("GET", "/v1/subjects"), ("DELETE", "/v1/subjects/{subject_id}"), ("GET", "/v1/events")} <= {
            (m, p) for m, p, _ in routes
        }
        assert {("POST", "/v1/videos"), ("GET", "/v1/faces/{face_id}/crop")} <= {(m, p) for m, p, _ in routes}
        for method, path, takes in routes:
            url = re.sub(r"\{subject_id\}", sid, path)
            url = re.sub(r"\{[^}]+\}", "1", url) + "?bogus=1" + "".join(f"&{p}=1" for p in takes)
            assert client.request(method, url).status_code == 401, (method, url)
            said = "takes " + ", ".join(f"`{p}`" for p in takes) if takes else "takes no query parameters"
            refused(client.request(method, url, headers={"X-API-Key": admin}), "bogus", said)
        subjects = client.get("/v1/subjects", headers={"X-API-Key": admin}).json()["items"]
        assert [s["id"] for s in subjects] == [sid], "a refused request changed the gallery"


def test_a_misspelt_parameter_changes_nothing_and_the_right_one_works(tmp_path: Path) -> None:
    """The two cases that hurt: a misspelt page size, and a misspelt erasure option on DELETE."""
    with local(app_with(tmp_path, lambda s: FakeAnalyzer())) as client:
        wait_until(lambda: client.get("/readyz").status_code == 200)
        ids = [client.post("/v1/subjects", json={"name": f"p{i}"}).json()["id"] for i in range(3)]
        refused(client.get("/v1/subjects?limt=1"), "limt", "takes `limit`, `cursor`")
        assert len(client.get("/v1/subjects?limit=1").json()["items"]) == 1
        assert client.head("/v1/subjects?limt=1").status_code == 422
        r = client.delete(f"/v1/subjects/{ids[0]}?erase_photo_face=true")
        refused(r, "erase_photo_face", "takes `erase_photo_faces`")
        assert client.get(f"/v1/subjects/{ids[0]}").status_code == 200, "a refused DELETE erased the subject"
        assert client.delete(f"/v1/subjects/{ids[0]}?erase_photo_faces=true").status_code == 204
        refused(client.get("/v1/events?sinse=2026-01-01T00:00:00Z"), "sinse", "takes `subject_id`, `source`")
        refused(client.get("/v1/subjects?=1"), "(empty name)", "takes `limit`, `cursor`")


def test_a_parameter_given_twice_is_refused_not_the_last_one_taken(tmp_path: Path) -> None:
    """``?erase_photo_faces=true&erase_photo_faces=false`` erased without the photo faces (the last value won)."""
    with local(app_with(tmp_path, lambda s: FakeAnalyzer())) as client:
        wait_until(lambda: client.get("/readyz").status_code == 200)
        sid = client.post("/v1/subjects", json={"name": "Ada"}).json()["id"]
        r = client.delete(f"/v1/subjects/{sid}?erase_photo_faces=true&erase_photo_faces=false")
        assert r.status_code == 422, r.text
        assert "erase_photo_faces: given more than once; give each query parameter once" in r.json()["error"]["message"]
        assert client.get(f"/v1/subjects/{sid}").status_code == 200, "a refused DELETE erased the subject"
        assert client.get("/v1/subjects?limit=1&limit=2").status_code == 422
