"""``GET /v1/subjects/{id}/export``: everything held about one person in one ZIP, and nothing of anyone else's,
through the real app on real stores (gallery, events, video jobs, photo library; a fake analyzer stands in for
the model at enrolment). The CLI (locally and through a server, real model) is in ``test_cli``."""

from __future__ import annotations

import io
import json
import time
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from service.audit import AUDIT_FILE
from service.events.store import Event
from service.photos.sqlite import SQLitePhotoStore
from service.photos.types import NewObservation
from tests.service.fakes import EmbeddingAnalyzer, app_with, local
from tests.service.helpers import png, wait_until


def event(subject_id: str | None, name: str | None, source: str, n: int) -> Event:
    return Event(f"{source}-{n}", time.time(), source, n, subject_id, name, 0.5, 0.001, 0.0, 1.0, 5)


def photo_face(i: int) -> NewObservation:
    e = np.zeros(128, np.float32)
    e[i] = 1.0
    return NewObservation(e, "fake", {"x": 0, "y": 0, "width": 9, "height": 9}, {}, crop_png=png(16, 16))


def people(client: TestClient) -> tuple[str, str]:
    """Ada (2 faces) and Bob (1 face), enrolled through the API; their ids."""
    ada = client.post("/v1/subjects", json={"name": "Ada", "metadata": {"team": "math"}}).json()["id"]
    bob = client.post("/v1/subjects", json={"name": "Bob"}).json()["id"]
    for sid, firsts in ((ada, (1, 2)), (bob, (3,))):
        files = [("images", (f"{b}.png", bytes([b]) + png(8, 8), "image/png")) for b in firsts]
        assert client.post(f"/v1/subjects/{sid}/faces", files=files).status_code == 201
    return ada, bob


def unzip(r: Any) -> zipfile.ZipFile:
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/zip" and r.headers["cache-control"] == "no-store"
    return zipfile.ZipFile(io.BytesIO(r.content))


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest) -> dict[str, Any]:
    """The settings of the embedded backend, or of the test's PostgreSQL database."""
    return {"database_url": request.getfixturevalue("pg_url")} if request.param == "postgres" else {}


def test_the_export_holds_the_subject_and_nothing_of_anyone_else(tmp_path: Path, backend: dict[str, Any]) -> None:
    settings = {"photo_library": True, "photo_recluster_interval_s": 0, **backend}
    app = app_with(tmp_path, lambda s: EmbeddingAnalyzer(), **settings)
    with local(app) as client:
        wait_until(lambda: client.get("/readyz").status_code == 200)
        ada, bob = people(client)
        media, library = app.state.media, app.state.photos
        media.events.add([event(ada, "Ada", "stream:s1", 1), event(bob, "Bob", "stream:s1", 2)], outbox=False)
        media.events.add([event(None, None, "stream:s1", 3), event(ada, "Ada", "video:v1", 4)], outbox=False)
        job = media.jobs.create("v1", filename="door.mp4", path=tmp_path / "v1.mp4", fps=None, size=10)
        tracks = [{"track_id": 1, "subject_id": ada, "name": "Ada"}, {"track_id": 2, "subject_id": bob, "name": "Bob"}]
        media.jobs.update(job.id, status="done", tracks=tracks)
        shared = library.add_faces(sha256="p1", external_id="party.jpg", faces=[photo_face(10), photo_face(11)])
        alone = library.add_faces(sha256="p2", external_id="bob.jpg", faces=[photo_face(12)])
        library.store.set_subject([shared.faces[0].id], ada, {})
        library.store.set_subject([shared.faces[1].id, alone.faces[0].id], bob, {})

        got = client.get(f"/v1/subjects/{ada}/export")
        z = unzip(got)
        read = lambda name: json.loads(z.read(name))  # noqa: E731
        manifest = read("manifest.json")
        assert manifest["format"] == 1 and manifest["subject_id"] == ada and manifest["model_id"] == ["fake"]
        assert manifest["counts"] == {
            "faces": 2,
            "face_crops": 2,
            "events": 2,
            "videos": 1,
            "photos": 1,
            "photo_faces": 1,
            "photo_face_crops": 1,
        }
        assert read("subject.json")["name"] == "Ada" and read("subject.json")["metadata"] == {"team": "math"}
        faces = read("faces.json")
        assert {f["subject_id"] for f in faces} == {ada} and len(faces) == 2
        for f in faces:
            assert Image.open(io.BytesIO(z.read(f"faces/{f['id']}.png"))).size == (160, 160)
        assert sorted(e["id"] for e in read("events.json")) == ["stream:s1-1", "video:v1-4"]
        (video,) = read("videos.json")
        assert video["video"]["id"] == "v1" and "path" not in video["video"]
        assert video["tracks"] == [tracks[0]], "another person's track was exported"
        (photo,) = read("photos.json")
        assert photo["external_id"] == "party.jpg" and [f["id"] for f in photo["faces"]] == [shared.faces[0].id]
        assert f"photo_faces/{shared.faces[0].id}.png" in z.namelist()
        assert not [n for n in z.namelist() if n.endswith(f"/{shared.faces[1].id}.png") and "photo" in n]

        (record,) = app.state.audit.tail(1)
        assert record["action"] == "subject.export" and record["target"]["subject_id"] == ada
        assert record["target"]["faces"] == 2

        head = client.head(f"/v1/subjects/{ada}/export")  # the headers only: no export made, none audited
        assert head.status_code == 200 and head.headers["content-type"] == "application/zip" and not head.content
        # a HEAD's Content-Length must be the GET's (RFC 9110 9.3.2): the GET streams, with none
        assert head.headers.get("content-length") == got.headers.get("content-length") is None
        assert client.head("/v1/subjects/nobody/export").status_code == 404
        assert app.state.audit.tail(1) == [record], "a HEAD was audited as an export"

        r = client.get("/v1/subjects/nobody/export")
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
        assert app.state.audit.tail(1) == [record], "a refused export was audited"


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full (a file whose writes fail with ENOSPC)")
def test_an_export_that_cannot_be_audited_is_not_sent(tmp_path: Path) -> None:
    """Handing out a person's data is recorded first: an audit log that refuses the record (a full disk) gets a
    507 that says nothing was sent, not a ZIP."""
    app = app_with(tmp_path, lambda s: EmbeddingAnalyzer())
    with local(app) as client:
        wait_until(lambda: client.get("/readyz").status_code == 200)
        ada, _ = people(client)
        log = tmp_path / "data" / AUDIT_FILE
        log.unlink()
        log.symlink_to("/dev/full")  # every write: ENOSPC
        r = client.get(f"/v1/subjects/{ada}/export")
        assert r.status_code == 507 and r.json()["error"]["code"] == "insufficient_storage", r.text
        assert r.json()["error"]["message"].startswith("nothing was sent, but its audit record cannot be written")


def test_with_the_photo_library_turned_off_its_faces_are_still_exported_and_erased(tmp_path: Path) -> None:
    """Photos indexed while the library was on keep people's faces after it is turned off: an export still holds
    them, an erasure still un-names them (or erases them, and their index snapshot, with erase_photo_faces)."""
    on = app_with(tmp_path, lambda s: EmbeddingAnalyzer(), photo_library=True, photo_recluster_interval_s=0)
    with local(on) as client:
        wait_until(lambda: client.get("/readyz").status_code == 200)
        ada, bob = people(client)
        library = on.state.photos
        party = library.add_faces(sha256="p1", external_id="party.jpg", faces=[photo_face(10), photo_face(11)])
        library.store.set_subject([party.faces[0].id], ada, {})
        library.store.set_subject([party.faces[1].id], bob, {})
        library.index.model("fake")  # loaded, so that closing writes its snapshot
    snapshots = list((tmp_path / "data" / "photos-index").glob("*"))
    assert snapshots, "the library wrote no index snapshot to test with"

    off = app_with(tmp_path, lambda s: EmbeddingAnalyzer(), photo_library=False)
    with local(off) as client:
        wait_until(lambda: client.get("/readyz").status_code == 200)
        got = client.get(f"/v1/subjects/{ada}/export")
        z = unzip(got)
        assert [f["id"] for f in json.loads(z.read("photos.json"))[0]["faces"]] == [party.faces[0].id]
        assert client.delete(f"/v1/subjects/{ada}").status_code == 204
        assert client.delete(f"/v1/subjects/{bob}", params={"erase_photo_faces": "true"}).status_code == 204
    store = SQLitePhotoStore(tmp_path / "data")
    try:
        kept = store.get_faces([party.faces[0].id, party.faces[1].id])
        assert [(f.id, f.subject_id) for f in kept] == [(party.faces[0].id, None)], "ada named, or bob's face kept"
    finally:
        store.close()
    assert not [p for p in snapshots if p.exists()], "an erased face's embedding stayed in an index snapshot"
