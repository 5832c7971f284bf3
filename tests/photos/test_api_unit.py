"""The photo library's HTTP surface without the model (in-process app, real gallery and photo store): the
opt-in (403 in the error envelope when off), validation errors, and the endpoints that need no analysis."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.config import Settings
from service.keys import KeyStore
from service.photos.types import NewObservation


def no_model(_: Settings) -> Any:
    raise RuntimeError("no model in these tests")


def client_for(tmp_path: Path, **settings: Any) -> TestClient:
    settings.setdefault("photo_recluster_interval_s", 0)
    keys = KeyStore(tmp_path / "data")
    admin = keys.create(scope="admin", name="admin")[1]
    keys.close()
    app = create_app(Settings(data=tmp_path / "data", **settings), analyzer_factory=no_model)
    return TestClient(app, headers={"X-API-Key": admin})


def envelope(r: Any, status: int, code: str) -> None:
    assert r.status_code == status, r.text
    assert r.json()["error"]["code"] == code and r.json()["error"]["message"]


def test_off_by_default_every_library_endpoint_answers_403(tmp_path: Path) -> None:
    assert Settings().photo_library is False
    with client_for(tmp_path) as c:
        envelope(c.post("/v1/photos", files={"image": b"x"}), 403, "photo_library_disabled")
        for path in ("/v1/clusters", "/v1/clusters/1", "/v1/subjects/x/photos", "/v1/photos/abc"):
            envelope(c.get(path), 403, "photo_library_disabled")
        envelope(c.post("/v1/search", data={"face_id": "1"}), 403, "photo_library_disabled")
        assert "FACEREC_PHOTO_LIBRARY=true" in c.get("/v1/clusters").json()["error"]["message"]
        # nothing was written for the library
        assert not (tmp_path / "data" / "photos.sqlite3").exists()


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    with client_for(tmp_path, photo_library=True) as c:
        yield c


def add(c: TestClient, n: int) -> list[int]:
    lib = c.app.state.photos  # type: ignore[attr-defined]
    rng = np.random.default_rng(0)
    centre = rng.standard_normal(128)
    ids = []
    for i in range(n):
        e = centre + rng.standard_normal(128) * 0.02
        face = NewObservation(
            (e / np.linalg.norm(e)).astype(np.float32), "m", {"x": 0, "y": 0, "width": 9, "height": 9}, {}
        )
        ids.append(lib.add_faces(sha256=f"s{i}", external_id=f"{i}.jpg", faces=[face]).faces[0].id)
    return ids


def test_clusters_pages_and_validation(client: TestClient) -> None:
    ids = add(client, 3)
    page = client.get("/v1/clusters").json()
    assert page["total"] == 1 and page["items"][0]["size"] == 3 and page["next_cursor"] is None
    cid = page["items"][0]["id"]
    detail = client.get(f"/v1/clusters/{cid}").json()
    assert sorted(f["id"] for f in detail["faces"]) == ids and all(f["subject_id"] is None for f in detail["faces"])
    for cursor in ("nope", "9" * 30, "\u00b2", "\u0663", "-1"):  # ² and ٣ pass str.isdigit
        envelope(client.get("/v1/clusters", params={"cursor": cursor}), 422, "validation_error")
        envelope(client.get("/v1/subjects/x/photos", params={"cursor": cursor}), 422, "validation_error")
    envelope(client.get("/v1/clusters/999"), 404, "not_found")
    envelope(client.post(f"/v1/clusters/{cid}/name", json={"name": "a", "subject_id": "b"}), 422, "validation_error")
    envelope(client.post(f"/v1/clusters/{cid}/name", json={}), 422, "validation_error")
    envelope(client.post(f"/v1/clusters/{cid}/name", json={"subject_id": "unknown"}), 404, "not_found")
    envelope(client.post(f"/v1/clusters/{cid}/merge", json={"cluster_id": cid}), 409, "conflict")
    for other in (2**63, True, "1", 1.0):  # past SQLite's INTEGER (was a 500); JSON true and strings are not ids
        envelope(client.post(f"/v1/clusters/{cid}/merge", json={"cluster_id": other}), 422, "validation_error")
    envelope(client.delete(f"/v1/clusters/{cid}/faces/999"), 404, "not_found")  # no such face
    envelope(client.get("/v1/photos/nope"), 404, "not_found")
    envelope(client.delete("/v1/photos/nope"), 404, "not_found")
    envelope(client.get("/v1/photos/faces/999/crop"), 404, "not_found")
    # nothing changed
    assert client.get("/v1/clusters").json()["items"][0]["size"] == 3


def test_name_by_subject_id_and_subject_photos(client: TestClient) -> None:
    add(client, 2)
    subject = client.post("/v1/subjects", json={"name": "Ada"}).json()
    cid = client.get("/v1/clusters").json()["items"][0]["id"]
    r = client.post(f"/v1/clusters/{cid}/name", json={"subject_id": subject["id"]})
    assert r.status_code == 200, r.text
    assert r.json() == {"subject_id": subject["id"], "subject_name": "Ada", "faces": 2, "enrolled": 0}
    photos = client.get(f"/v1/subjects/{subject['id']}/photos", params={"limit": 1}).json()
    assert len(photos["items"]) == 1 and photos["next_cursor"]
    rest = client.get(f"/v1/subjects/{subject['id']}/photos", params={"cursor": photos["next_cursor"]}).json()
    assert len(rest["items"]) == 1 and rest["next_cursor"] is None and rest["items"] != photos["items"]
    envelope(client.get("/v1/subjects/unknown/photos"), 404, "not_found")
    envelope(client.delete("/v1/subjects/unknown/photos"), 404, "not_found")  # was 200, and audited
    # erasing the subject without the flag keeps the faces, unnamed, in one cluster
    assert client.delete(f"/v1/subjects/{subject['id']}").status_code == 204
    assert client.get("/v1/clusters").json()["items"][0]["size"] == 2


def test_search_by_face_id_and_recluster_without_the_model(client: TestClient) -> None:
    ids = add(client, 3)
    r = client.post("/v1/search", json={"face_id": ids[0], "top_k": 2})
    assert r.status_code == 200, r.text  # a search by face id needs no model
    hits = r.json()["results"]
    assert hits[0]["face"]["id"] == ids[0] and len(hits) == 2 and hits[0]["similarity"] > 0.99
    envelope(client.post("/v1/search", json={"top_k": 2}), 422, "validation_error")
    envelope(client.post("/v1/search", json={"face_id": 999}), 404, "not_found")
    envelope(client.post("/v1/search", json={"face_id": 2**63}), 422, "validation_error")  # was a 500
    # an image needs the model: 503 while it is not loaded (here: it failed to load)
    envelope(client.post("/v1/search", files={"image": b"x"}), 503, "not_ready")
    r = client.post("/v1/clusters/recluster")
    assert r.status_code == 200 and r.json()["faces"] == 3 and r.json()["clusters"] == 1


def test_the_first_request_after_a_start_completes_an_interrupted_naming(client: TestClient) -> None:
    ids = add(client, 2)
    lib = client.app.state.photos  # type: ignore[attr-defined]
    subject = client.post("/v1/subjects", json={"name": "Ada"}).json()
    cid = client.get("/v1/clusters").json()["items"][0]["id"]
    # as a crash right after the intent was recorded leaves it; a fresh start has not repaired yet
    lib.store.begin_naming(cluster_id=cid, faces=ids, enrol=[], subject_id=subject["id"], name=None)
    lib.namings_repaired = False
    assert client.get("/v1/clusters").json()["total"] == 0  # completed before this request was answered
    photos = client.get(f"/v1/subjects/{subject['id']}/photos").json()["items"]
    assert len(photos) == 2 and lib.store.pending_namings() == []


def test_a_subjects_photos_page_on_while_photos_are_deleted_and_indexed(client: TestClient) -> None:
    """Paging through a person's photos while one of them is erased and a new one indexed lists every photo
    that was there throughout exactly once (an offset cursor skipped one after the erasure, repeated one after
    the new photo)."""
    lib = client.app.state.photos  # type: ignore[attr-defined]
    subject = client.post("/v1/subjects", json={"name": "Ada"}).json()["id"]
    rng = np.random.default_rng(1)

    def photo(i: int) -> str:
        e = rng.standard_normal(128)
        face = NewObservation((e / np.linalg.norm(e)).astype(np.float32), "m", {"x": 0, "y": 0}, {}, subject_id=subject)
        return str(lib.add_faces(sha256=f"p{i}", external_id=None, faces=[face]).photo.id)

    ids = [photo(i) for i in range(6)]  # listed newest first: ids[5], ids[4], ...
    url = f"/v1/subjects/{subject}/photos"
    first = client.get(url, params={"limit": 2}).json()
    assert [p["id"] for p in first["items"]] == [ids[5], ids[4]]
    assert client.delete(f"/v1/photos/{ids[5]}").status_code == 204  # erased from the page being looked at
    second = client.get(url, params={"limit": 2, "cursor": first["next_cursor"]}).json()
    assert [p["id"] for p in second["items"]] == [ids[3], ids[2]]
    photo(6)  # indexed meanwhile: newer than every page, so on none of the next ones
    third = client.get(url, params={"limit": 2, "cursor": second["next_cursor"]}).json()
    assert [p["id"] for p in third["items"]] == [ids[1], ids[0]] and third["next_cursor"] is None


def groups_of(c: TestClient, sizes: list[int]) -> list[int]:
    """One cluster of each size (far-apart people, faces 0.02 around their centre); their cluster ids."""
    lib = c.app.state.photos  # type: ignore[attr-defined]
    rng = np.random.default_rng(2)
    out = []
    for g, size in enumerate(sizes):
        centre = rng.standard_normal(128)
        for i in range(size):
            e = centre + rng.standard_normal(128) * 0.02
            face = NewObservation((e / np.linalg.norm(e)).astype(np.float32), "m", {"x": 0, "y": 0}, {})
            added = lib.add_faces(sha256=f"g{g}-{i}", external_id=None, faces=[face])
        out.append(added.faces[0].cluster_id)
    return out


def test_clusters_page_on_while_the_listed_ones_are_named(client: TestClient) -> None:
    """Naming (or merging) a cluster of the page being looked at makes the next page skip none (an offset cursor
    skipped one per cluster gone); ``total`` and the pages count only clusters of ``min_size``."""
    ids = groups_of(client, [5, 4, 3, 2, 1, 1])
    first = client.get("/v1/clusters", params={"limit": 2}).json()
    assert [c["id"] for c in first["items"]] == ids[:2] and first["total"] == 6
    named = client.post(f"/v1/clusters/{ids[0]}/name", json={"name": "Ada"})
    assert named.status_code == 200, named.text
    second = client.get("/v1/clusters", params={"limit": 2, "cursor": first["next_cursor"]}).json()
    assert [c["id"] for c in second["items"]] == ids[2:4]
    third = client.get("/v1/clusters", params={"limit": 2, "cursor": second["next_cursor"]}).json()
    assert [c["id"] for c in third["items"]] == ids[4:] and third["next_cursor"] is None
    big = client.get("/v1/clusters", params={"limit": 2, "min_size": 2}).json()
    assert [c["id"] for c in big["items"]] == ids[1:3] and big["total"] == 3
    rest = client.get("/v1/clusters", params={"limit": 2, "min_size": 2, "cursor": big["next_cursor"]}).json()
    assert [c["id"] for c in rest["items"]] == ids[3:4] and rest["next_cursor"] is None and rest["total"] == 3
    for cursor in ("5_", "_5", "5_5_5", "5.0_1", "1" * 19 + "_1"):
        envelope(client.get("/v1/clusters", params={"cursor": cursor}), 422, "validation_error")
    envelope(client.get("/v1/clusters", params={"min_size": 2**63}), 422, "validation_error")


def test_search_takes_no_json_boolean_for_a_number(client: TestClient) -> None:
    """``{"face_id": true}`` searched with face 1 (a boolean read as the integer 1); every number of a search is a
    422 as a boolean, while form fields (text) still read as numbers."""
    ids = add(client, 2)
    for field, value in (("face_id", True), ("top_k", True), ("threshold", False)):
        body = {"face_id": ids[0], field: value}
        envelope(client.post("/v1/search", json=body), 422, "validation_error")
    form = client.post("/v1/search", files={"face_id": (None, str(ids[1])), "top_k": (None, "1")})
    assert form.status_code == 200, form.text
    assert [h["face"]["id"] for h in form.json()["results"]] == [ids[1]]
