"""``GET /v1/subjects`` gives each subject a ``sample_face_id`` (its earliest face, for a thumbnail, in the
listing's own query) and ``GET /v1/faces/{id}/crop`` that face's crop: on the embedded (SQLite) backend and on
PostgreSQL, in-process with a model stand-in."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from tests.service.fakes import EmbeddingAnalyzer, app_with, local


@pytest.fixture(params=["sqlite", "postgres"])
def settings(request: pytest.FixtureRequest) -> dict[str, Any]:
    """The app's backend settings: the embedded default, or a fresh PostgreSQL database."""
    return {"database_url": request.getfixturevalue("pg_url")} if request.param == "postgres" else {}


def test_subjects_carry_their_earliest_face_and_its_crop(tmp_path: Path, settings: dict[str, Any]) -> None:
    with local(app_with(tmp_path, lambda s: EmbeddingAnalyzer(), **settings)) as client:
        ada, bob, nobody = (client.post("/v1/subjects", json={"name": n}).json() for n in ("Ada", "Bob", "Nobody"))
        assert ada["sample_face_id"] is None

        def enrol(subject: dict[str, Any], *firsts: int) -> list[int]:
            images = [("images", bytes([i]) + b"-image") for i in firsts]  # EmbeddingAnalyzer: unit(first byte)
            r = client.post(f"/v1/subjects/{subject['id']}/faces", files=images)
            assert r.status_code == 201, r.text
            return [f["id"] for f in r.json()["faces"]]

        bob_first = enrol(bob, 1)[0]
        ada_faces = enrol(ada, 2, 3)
        enrol(bob, 4)
        listed = {s["id"]: s["sample_face_id"] for s in client.get("/v1/subjects").json()["items"]}
        assert listed == {ada["id"]: min(ada_faces), bob["id"]: bob_first, nobody["id"]: None}
        assert client.get(f"/v1/subjects/{ada['id']}").json()["sample_face_id"] == min(ada_faces)

        crop = client.get(f"/v1/faces/{bob_first}/crop")
        assert crop.status_code == 200 and crop.headers["content-type"] == "image/png"
        assert Image.open(io.BytesIO(crop.content)).size == (160, 160)
        # no cache may show a crop without asking first (an erased face's crop would linger); unchanged: 304
        assert crop.headers["cache-control"] == "private, no-cache" and crop.headers["etag"]
        again = client.get(f"/v1/faces/{bob_first}/crop", headers={"If-None-Match": crop.headers["etag"]})
        assert again.status_code == 304 and again.content == b"" and again.headers["etag"] == crop.headers["etag"]
        other = client.get(f"/v1/faces/{bob_first}/crop", headers={"If-None-Match": '"0"'})
        assert other.status_code == 200 and other.content == crop.content

        ada_crop = client.get(f"/v1/faces/{min(ada_faces)}/crop")  # fetched before the deletion below
        assert client.delete(f"/v1/faces/{min(ada_faces)}").status_code == 204
        assert client.get("/v1/subjects").json()["items"][0]["sample_face_id"] == max(ada_faces)
        gone = client.get(f"/v1/faces/{min(ada_faces)}/crop", headers={"If-None-Match": ada_crop.headers["etag"]})
        assert gone.status_code == 404 and gone.json()["error"]["code"] == "not_found"


def test_without_stored_crops_the_sample_face_has_no_crop(tmp_path: Path, settings: dict[str, Any]) -> None:
    with local(app_with(tmp_path, lambda s: EmbeddingAnalyzer(), store_crops=False, **settings)) as client:
        sid = client.post("/v1/subjects", json={"name": "Ada"}).json()["id"]
        face = client.post(f"/v1/subjects/{sid}/faces", files={"images": b"\x05x"}).json()["faces"][0]["id"]
        assert client.get("/v1/subjects").json()["items"][0]["sample_face_id"] == face
        r = client.get(f"/v1/faces/{face}/crop")
        assert r.status_code == 404 and "no stored crop" in r.json()["error"]["message"]


def test_the_openapi_document_describes_the_sample_face(tmp_path: Path) -> None:
    with local(app_with(tmp_path, lambda s: EmbeddingAnalyzer())) as client:
        spec = client.get("/openapi.json").json()
    field = spec["components"]["schemas"]["SubjectOut"]["properties"]["sample_face_id"]
    assert "thumbnail" in field["description"] and {"type": "null"} in field["anyOf"]
    crop = spec["paths"]["/v1/faces/{face_id}/crop"]["get"]
    assert "image/png" in crop["responses"]["200"]["content"]
