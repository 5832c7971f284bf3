"""Erasure audited from outside, on the embedded backend: a person enrolled through the real server (real photos,
MTCNN, FaceNet), also indexed in the photo library and seen in a video job, is erased
(``DELETE /v1/subjects/{id}?erase_photo_faces=true``); then every file of the data dir (and the server log) is
scanned for the exact bytes of their embeddings (float32 little-endian, as both SQLite files store them) and of
their stored face crops (PNG), and for their subject id where it would say who was seen where."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from bench.video_scenes import Actor, Scene, write_video
from tests.service.helpers import images
from tests.service.server import Server

pytestmark = pytest.mark.slow

ERASED, KEPT = "madonna", "elton_john"
ENV = {"FACEREC_PHOTO_LIBRARY": "true", "FACEREC_PHOTO_RECLUSTER_INTERVAL_S": "0", "FACEREC_RATE_LIMIT_PER_MINUTE": "0"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, dataset: Path) -> Iterator[Server]:
    yield from Server(tmp_path_factory.mktemp("erasure") / "data", env=ENV).serving()


@pytest.fixture(scope="module")
def client(server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=120) as c:
        yield c


def _enrol(client: httpx.Client, dataset: Path, person: str) -> str:
    sid = str(client.post("/v1/subjects", json={"name": person}).json()["id"])
    files = [("images", (p.name, p.read_bytes(), "image/jpeg")) for p in images(dataset, "train", person)[:5]]
    assert client.post(f"/v1/subjects/{sid}/faces", files=files).status_code == 201
    return sid


def _rows(path: Path, sql: str, *args: object) -> list[tuple[bytes, ...]]:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()


def _pieces(blob: bytes, size: int) -> list[bytes]:
    """Every ``size``-byte window of ``blob`` at a ``size`` stride: a partial copy of it is found too."""
    return [blob[i : i + size] for i in range(0, len(blob) - size + 1, size)]


@pytest.fixture(scope="module")
def erased(client: httpx.Client, server: Server, dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Enrol two people, index photos of both, run a video of the erased one; capture the erased one's bytes;
    erase them. Returns the subject ids and the captured byte strings."""
    sid, kept = _enrol(client, dataset, ERASED), _enrol(client, dataset, KEPT)
    for person in (ERASED, KEPT):
        for path in images(dataset, "train", person)[5:9]:
            r = client.post("/v1/photos", files={"image": path.read_bytes()}, data={"external_id": path.name})
            assert r.status_code == 201, r.text
    photo = images(dataset, "val", ERASED)[0]
    scene = Scene([Actor(photo, 0.2, 2.8, 40, 280, True, ERASED)], fps=8.0, duration_s=3.0)
    video = write_video(scene, tmp_path_factory.mktemp("clip") / "erased.avi")
    r = client.post("/v1/videos", files={"video": (video.name, video.read_bytes(), "video/x-msvideo")})
    assert r.status_code == 202, r.text
    video_id = r.json()["id"]
    deadline = time.monotonic() + 240
    while (job := client.get(f"/v1/videos/{video_id}").json())["status"] not in ("done", "failed"):
        assert time.monotonic() < deadline, job
        time.sleep(0.3)
    assert any(t["subject_id"] == sid for t in job["tracks"]), job  # the video named them
    assert client.get("/v1/events", params={"subject_id": sid}).json()["items"]

    data = server.data
    faces = _rows(
        data / "gallery.sqlite3",
        "SELECT f.embedding, c.png FROM faces f JOIN subjects s ON s.pk = f.subject_pk "
        "LEFT JOIN face_crops c ON c.face_id = f.id WHERE s.id = ?",
        sid,
    )
    observations = _rows(data / "photos.sqlite3", "SELECT embedding, crop FROM observations WHERE subject_id = ?", sid)
    assert len(faces) >= 2 and all(len(e) == 512 and png for e, png in faces)
    assert len(observations) >= 3 and all(len(e) == 512 and crop for e, crop in observations)
    embeddings = [bytes(e) for e, _ in faces + observations]
    crops = [bytes(c) for _, c in faces + observations]

    r = client.delete(f"/v1/subjects/{sid}", params={"erase_photo_faces": "true"})
    assert r.status_code == 204, r.text
    return {"sid": sid, "kept": kept, "video": video_id, "embeddings": embeddings, "crops": crops, "photo": photo}


def _leaks(files: list[Path], erased: dict) -> list[str]:
    """``file: what`` for every file holding a 16-byte piece of an erased embedding or a 64-byte piece of an erased
    crop (the PNG header is skipped: every PNG starts alike)."""
    found = []
    for path in files:
        blob = path.read_bytes() if path.is_file() else b""
        if any(p in blob for e in erased["embeddings"] for p in _pieces(e, 16)):
            found.append(f"{path.name}: embedding")
        if any(p in blob for c in erased["crops"] for p in _pieces(c[64:], 64)):
            found.append(f"{path.name}: crop")
    return found


def _files(data: Path) -> list[Path]:
    return sorted(p for p in data.rglob("*") if p.is_file())


def test_the_databases_forget_the_person_when_the_delete_returns(server: Server, erased: dict) -> None:
    databases = [p for p in _files(server.data) if ".sqlite3" in p.name or ".db" in p.name]
    assert {p.name for p in databases} >= {"gallery.sqlite3", "photos.sqlite3", "events.db", "videos.db"}
    assert _leaks(databases, erased) == []


def test_no_file_of_the_data_dir_holds_them_after_the_next_snapshot(server: Server, erased: dict) -> None:
    time.sleep(7)  # the gallery snapshots 5 s after an erasure
    assert _leaks([*_files(server.data), server.log], erased) == []


def test_who_was_seen_where_forgets_them(client: httpx.Client, server: Server, erased: dict) -> None:
    sid = erased["sid"]
    assert client.get("/v1/events", params={"subject_id": sid}).json()["items"] == []
    job = client.get(f"/v1/videos/{erased['video']}").json()
    assert job["status"] == "done" and job["tracks"] == [], job  # their track is gone with its event
    for path in _files(server.data):
        if path.name.startswith(("events.db", "videos.db")):
            assert sid.encode() not in path.read_bytes(), path.name


def test_after_a_restart_their_photo_matches_no_one(client: httpx.Client, server: Server, erased: dict) -> None:
    server.restart()
    r = client.post("/v1/identify", files={"image": erased["photo"].read_bytes()})
    assert r.status_code == 200, r.text
    (face,) = r.json()["faces"]
    assert face["match"] is None
    assert face["candidates"] and erased["sid"] not in {c["subject_id"] for c in face["candidates"]}
    assert client.get(f"/v1/subjects/{erased['sid']}").status_code == 404
    assert client.get(f"/v1/subjects/{erased['kept']}").status_code == 200
    assert client.get(f"/v1/subjects/{erased['sid']}/photos").json().get("items", []) == []
    assert _leaks([*_files(server.data), server.log], erased) == []
