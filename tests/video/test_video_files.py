"""Video files a user may well upload, on a real server with the real models: a low sampling rate (or a
time-lapse file whose frames are seconds apart) and frames larger than the image limit."""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import httpx
import numpy as np
import pytest

from bench.video_scenes import Actor, Scene, write_video
from tests.service.server import Server
from tests.video.helpers import enrol, val_photo, wait_done

pytestmark = pytest.mark.slow

PERSON = "elton_john"
STALL_S = 2.0
"""The server's ``FACEREC_BODY_IDLE_TIMEOUT_S`` here."""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    stall_s = {"FACEREC_BODY_IDLE_TIMEOUT_S": str(STALL_S)}  # the other tests send their bodies at once
    yield from Server(tmp_path_factory.mktemp("video-files") / "data", env=stall_s).serving()


@pytest.fixture(scope="module")
def subjects(client: httpx.Client, dataset: Path) -> dict[str, str]:
    return enrol(client, dataset, (PERSON,))


def upload(client: httpx.Client, path: Path, **data: Any) -> str:
    with path.open("rb") as f:
        r = client.post("/v1/videos", files={"video": (path.name, f, "video/x-msvideo")}, data=data)
    assert r.status_code == 202, r.text
    return str(r.json()["id"])


def test_a_sampling_rate_under_one_frame_a_second_still_finds_people(
    client: httpx.Client, subjects: dict[str, str], dataset: Path, tmp_path: Path
) -> None:
    """fps 0.5 (accepted: 0.01 to 60) samples a frame every 2 s, over the tracker's 1 s age: every track ended
    after one frame, as noise, and a person 12 s in view was not reported (``done`` with no tracks)."""
    slow = Actor(val_photo(dataset, PERSON), 0.3, 12.3, 90, 180, True, PERSON)
    path = write_video(Scene([slow], fps=10.0), tmp_path / "slow.avi")
    for fps in ("0.5", "5"):
        job = wait_done(client, upload(client, path, fps=fps))
        assert job["status"] == "done", job
        assert [t["subject_id"] for t in job["tracks"]] == [subjects[PERSON]], (fps, job["tracks"])
    # a time-lapse file (a frame every 2 s), analysed at the default rate: the same
    lapse = tmp_path / "lapse.avi"
    writer = cv2.VideoWriter(str(lapse), cv2.CAP_FFMPEG, cv2.VideoWriter.fourcc(*"MJPG"), 0.5, (640, 360))
    scene = Scene([slow], fps=0.5)
    for _, frame in scene.frames():
        writer.write(frame)
    writer.release()
    job = wait_done(client, upload(client, lapse))
    assert [t["subject_id"] for t in job["tracks"] or []] == [subjects[PERSON]], job


def test_frames_over_the_pixel_limit_fail_the_job(client: httpx.Client, tmp_path: Path) -> None:
    """A small file of huge frames (here 1.3 MB of 8000x6000 JPEG frames, 48 MP each) took the server's memory
    up by GBs while the same picture as a photo is a 413 (``FACEREC_MAX_PIXELS``, 40 MP)."""
    path = tmp_path / "huge.avi"
    writer = cv2.VideoWriter(str(path), cv2.CAP_FFMPEG, cv2.VideoWriter.fourcc(*"MJPG"), 5.0, (8000, 6000))
    for _ in range(3):
        writer.write(np.full((6000, 8000, 3), 90, np.uint8))
    writer.release()
    job = wait_done(client, upload(client, path))
    assert job["status"] == "failed" and job["tracks"] is None, job
    assert "8000x6000" in job["error"] and "FACEREC_MAX_PIXELS" in job["error"], job["error"]


def crossing_then_empty(dataset: Path, person: str, path: Path, duration_s: float = 60.0) -> Path:
    """``person`` crosses in the first 3.3 s of a video that goes on, empty, for ``duration_s``: a job on it
    has decided them long before it ends."""
    actor = Actor(val_photo(dataset, person), 0.3, 3.3, 90, 180, True, person)
    return write_video(Scene([actor], fps=10.0, duration_s=duration_s), path)


def wait_progress(client: httpx.Client, video_id: str, progress: float, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/v1/videos/{video_id}").json()
        assert job["status"] in ("queued", "running"), job
        if job["progress"] >= progress:
            return
        time.sleep(0.1)
    raise AssertionError(f"video {video_id} not at {progress} after {timeout} s")


def test_a_person_erased_while_a_job_runs_is_not_in_its_results(
    client: httpx.Client, dataset: Path, tmp_path: Path
) -> None:
    """A job stores its tracks and events when it ends: the erasure of a person the job had decided already
    found nothing to erase, and the job then stored their tracks and events (and sent their webhooks) anyway."""
    sid = enrol(client, dataset, ("madonna",))["madonna"]
    video_id = upload(client, crossing_then_empty(dataset, "madonna", tmp_path / "m.mp4"), fps="10")
    wait_progress(client, video_id, 0.25)  # 15 s in: madonna left at 3.3 s and was decided
    assert client.delete(f"/v1/subjects/{sid}").status_code == 204
    job = wait_done(client, video_id)
    assert job["status"] == "done", job
    assert all(t["subject_id"] != sid for t in job["tracks"]), job["tracks"]
    assert client.get("/v1/events", params={"subject_id": sid}).json()["items"] == []


def test_a_renamed_person_is_shown_under_the_new_name(client: httpx.Client, dataset: Path, tmp_path: Path) -> None:
    """Tracks and events are stored with the name they were decided under: a name corrected with
    ``PATCH /v1/subjects/{id}`` was still shown under the old spelling by the finished jobs' tracks, the events
    and the attendance export, and by a job that was running at the rename."""
    sid = enrol(client, dataset, ("ben_afflek",))["ben_afflek"]
    video = crossing_then_empty(dataset, "ben_afflek", tmp_path / "b.mp4", duration_s=30.0)
    done = wait_done(client, upload(client, video, fps="10"))
    running = upload(client, video, fps="10")
    wait_progress(client, running, 0.3)
    assert client.patch(f"/v1/subjects/{sid}", json={"name": "Ben Affleck"}).status_code == 200
    for job in (client.get(f"/v1/videos/{done['id']}").json(), wait_done(client, running)):
        assert [(t["subject_id"], t["name"]) for t in job["tracks"]] == [(sid, "Ben Affleck")], job
    events = client.get("/v1/events", params={"subject_id": sid}).json()["items"]
    assert len(events) == 2 and {e["name"] for e in events} == {"Ben Affleck"}, events
    assert client.patch(f"/v1/subjects/{sid}", json={"metadata": {"team": "a"}}).status_code == 200
    assert client.get(f"/v1/videos/{done['id']}").json()["tracks"][0]["name"] == "Ben Affleck"


def test_a_misspelt_or_repeated_form_field_is_refused(client: httpx.Client, server: Server, tmp_path: Path) -> None:
    """A misspelt ``fsp=1`` was ignored (the video ran at the default 5 frames/s), ``fps`` given twice kept the
    last, and a second file (``thumbnail``) was refused as "the form fields are too large"."""
    before = client.get("/v1/videos", params={"limit": 100}).json()["items"]
    video = ("a.avi", b"x" * 100, "video/x-msvideo")
    cases: list[tuple[list[tuple[str, Any]], str, str]] = [
        ([("video", video), ("fsp", (None, "1"))], "fsp", "extra inputs"),
        ([("video", video), ("fps", (None, "1")), ("fps", (None, "2"))], "fps", "more than once"),
        ([("video", video), ("thumbnail", ("t.jpg", b"y" * 70_000, "image/jpeg"))], "thumbnail", "field `video`"),
    ]
    for files, field, words in cases:
        r = client.post("/v1/videos", files=files)
        assert r.status_code == 422 and r.json()["error"]["code"] == "validation_error", r.text
        message = r.json()["error"]["message"]
        assert message.startswith(f"{field}: ") and words in message.lower(), message
    assert client.get("/v1/videos", params={"limit": 100}).json()["items"] == before
    assert not list((server.data / "uploads").glob("*"))


def test_a_client_that_drops_its_upload_is_no_server_error(
    client: httpx.Client, server: Server, dataset: Path, tmp_path: Path
) -> None:
    """A connection closed in the middle of an upload (a phone leaving the Wi-Fi) was counted as a 500 in
    ``/metrics`` and logged as two tracebacks: an operator's 5xx alert fired for a client's network."""
    video = crossing_then_empty(dataset, PERSON, tmp_path / "drop.avi", duration_s=8.0).read_bytes()
    head = b'--cut\r\nContent-Disposition: form-data; name="video"; filename="drop.avi"\r\n\r\n'
    log_before = server.log.read_text()
    with socket.create_connection(("127.0.0.1", server.port)) as s:
        request = "POST /v1/videos HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=cut\r\n"
        s.sendall(f"{request}Content-Length: {len(head) + len(video) + 10}\r\n\r\n".encode() + head)
        s.sendall(video[: len(video) // 2])
        time.sleep(0.5)  # the server is reading the body
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # closed with a reset
    deadline = time.monotonic() + 10
    while 'route="/v1/videos",status="499"' not in (metrics := client.get("/metrics").text):
        assert time.monotonic() < deadline, metrics
        time.sleep(0.1)
    assert 'route="/v1/videos",status="500"' not in metrics
    assert "Traceback" not in server.log.read_text()[len(log_before) :]
    assert not list((server.data / "uploads").glob("*"))


def test_a_photo_uploaded_as_a_video_fails_with_a_message(client: httpx.Client, dataset: Path) -> None:
    """FFmpeg reads a JPEG or PNG as a video of one frame, in which nobody can be tracked (3 frames at least): the
    job was ``done`` with no tracks, as if nobody were in the picture."""
    photo = val_photo(dataset, PERSON)
    image = cv2.imread(str(photo))
    assert image is not None
    png = cv2.imencode(".png", image)[1].tobytes()
    for name, data in (("photo.mp4", photo.read_bytes()), ("photo.avi", png)):
        r = client.post("/v1/videos", files={"video": (name, data, "video/mp4")})
        job = wait_done(client, r.json()["id"])
        assert job["status"] == "failed" and "still image" in job["error"], job


@pytest.mark.parametrize("path", ["/v1/videos", "/v1/detect"])
def test_an_upload_that_stalls_is_a_408_and_leaves_nothing(
    client: httpx.Client, server: Server, dataset: Path, path: str
) -> None:
    """A client that stopped sending in the middle of its upload (and kept the connection open) held the
    connection, a worker and the part-written upload file for ever (the upload sweep could delete the file from
    under the request after 15 minutes)."""
    data = val_photo(dataset, PERSON).read_bytes()
    field = "video" if path == "/v1/videos" else "image"
    head = f'--cut\r\nContent-Disposition: form-data; name="{field}"; filename="a.jpg"\r\n\r\n'.encode()
    before = client.get("/v1/videos", params={"limit": 100}).json()["items"]
    with socket.create_connection(("127.0.0.1", server.port)) as s:
        s.settimeout(STALL_S + 30)
        request = f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=cut\r\n"
        s.sendall(f"{request}Content-Length: {len(head) + len(data) + 10}\r\n\r\n".encode() + head)
        s.sendall(data[: len(data) // 2])
        started = time.monotonic()
        answer = b""
        while chunk := s.recv(65536):  # the server answers, then closes the connection
            answer += chunk
        waited = time.monotonic() - started
    status, _, rest = answer.partition(b"\r\n")
    assert status.startswith(b"HTTP/1.1 408"), answer
    assert b'"code":"request_timeout"' in rest and b"FACEREC_BODY_IDLE_TIMEOUT_S" in rest, answer
    assert STALL_S - 0.5 < waited < STALL_S + 10, waited
    assert client.get("/v1/videos", params={"limit": 100}).json()["items"] == before
    assert not list((server.data / "uploads").glob("*"))
