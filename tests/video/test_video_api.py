"""``/v1/videos`` and ``/v1/events`` on a real server with the real models: videos made from the 5-celebrity
photos (three enrolled people and a stranger crossing a background), read by OpenCV's FFmpeg backend; events
delivered to a real webhook receiver and their signatures checked here."""

from __future__ import annotations

import resource
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from bench.video_scenes import write_video
from tests.service.server import REPO, Server
from tests.video.helpers import ENROLLED, STRANGER, WebhookReceiver, enrol, people_scene, sign, wait_done

pytestmark = pytest.mark.slow

SECRET = "test-webhook-secret"
IMAGE_LIMIT = 1_000_000
VIDEO_LIMIT = 20_000_000


@pytest.fixture(scope="module")
def receiver() -> Iterator[WebhookReceiver]:
    r = WebhookReceiver(fail_first=1)
    yield r
    r.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, dataset: Path, receiver: WebhookReceiver) -> Iterator[Server]:
    env = {
        "FACEREC_WEBHOOK_URL": receiver.url,
        "FACEREC_WEBHOOK_SECRET": SECRET,
        "FACEREC_MAX_UPLOAD_BYTES": str(IMAGE_LIMIT),
        "FACEREC_VIDEO_MAX_UPLOAD_BYTES": str(VIDEO_LIMIT),
    }
    yield from Server(tmp_path_factory.mktemp("videos") / "data", env=env).serving()


@pytest.fixture(scope="module")
def subjects(client: httpx.Client, dataset: Path) -> dict[str, str]:
    """The enrolled people, name -> subject id (5 train photos each)."""
    return enrol(client, dataset)


@pytest.fixture(scope="module")
def people_avi(tmp_path_factory: pytest.TempPathFactory, dataset: Path) -> Path:
    """The scene as MJPG in AVI: over the image upload limit, under the video one."""
    path = write_video(people_scene(dataset), tmp_path_factory.mktemp("clips") / "people.avi")
    assert IMAGE_LIMIT < path.stat().st_size < VIDEO_LIMIT
    return path


def upload(client: httpx.Client, path: Path, **data: Any) -> httpx.Response:
    with path.open("rb") as f:
        return client.post("/v1/videos", files={"video": (path.name, f, "video/x-msvideo")}, data=data)


def test_a_video_gives_one_decision_per_person(
    client: httpx.Client, subjects: dict[str, str], people_avi: Path, receiver: WebhookReceiver
) -> None:
    r = upload(client, people_avi, fps="10")
    assert r.status_code == 202, r.text
    assert r.json()["status"] == "queued" and r.headers["location"] == f"/v1/videos/{r.json()['id']}"
    job = wait_done(client, r.json()["id"])
    assert job["status"] == "done", job
    assert job["progress"] == 1.0 and job["error"] is None
    tracks = job["tracks"]
    named = [t["name"] for t in tracks]
    # four people crossed: each enrolled one named right once, the stranger unknown, nobody else
    assert sorted(n for n in named if n) == sorted(ENROLLED), tracks
    assert named.count(None) == 1, tracks
    for t in tracks:
        assert t["frames"] >= 10 and 0 <= t["first_s"] < t["last_s"]
        assert (
            t["estimated_false_identification_rate"] is not None and t["estimated_false_identification_rate"] <= 0.011
        )
        if t["name"]:
            assert t["subject_id"] == subjects[t["name"]] and t["distance"] < 1.0
    stranger = next(t for t in tracks if t["name"] is None)
    # the stranger is the last to cross (enters at 6.3 s)
    assert stranger["first_s"] > 6.0

    events = client.get("/v1/events", params={"source": f"video:{job['id']}"}).json()
    assert events["next_cursor"] is None
    assert sorted((e["name"] or STRANGER) for e in events["items"]) == sorted([*ENROLLED, STRANGER])
    # the webhook: every event delivered (the first attempt got a 503 and was retried), each correctly signed
    ids = {e["id"] for e in events["items"]}
    deadline = time.monotonic() + 30
    while not ids <= {e["id"] for e in receiver.events()} and time.monotonic() < deadline:
        time.sleep(0.2)
    assert ids <= {e["id"] for e in receiver.events()}
    for headers, body in receiver.requests:
        assert headers["x-facerec-signature"] == sign(SECRET, headers["x-facerec-timestamp"], body)
    assert len(receiver.requests) >= len(ids) + 1


def test_events_filter_by_subject_and_time_and_page(client: httpx.Client, subjects: dict[str, str]) -> None:
    ben = client.get("/v1/events", params={"subject_id": subjects["ben_afflek"]}).json()["items"]
    assert ben and {e["name"] for e in ben} == {"ben_afflek"}
    first = client.get("/v1/events", params={"limit": 1}).json()
    assert len(first["items"]) == 1 and first["next_cursor"]
    rest = client.get("/v1/events", params={"limit": 1000, "cursor": first["next_cursor"]}).json()["items"]
    assert first["items"][0]["id"] not in {e["id"] for e in rest}
    assert client.get("/v1/events", params={"since": "2999-01-01T00:00:00Z"}).json()["items"] == []
    assert len(client.get("/v1/events", params={"until": "2999-01-01T00:00:00Z"}).json()["items"]) >= 4
    bad = client.get("/v1/events", params={"cursor": "nope"})
    assert bad.status_code == 422 and bad.json()["error"]["code"] == "validation_error"


def test_corrupt_and_truncated_videos_fail_visibly(client: httpx.Client, people_avi: Path, tmp_path: Path) -> None:
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 200)
    truncated = tmp_path / "truncated.avi"
    data = people_avi.read_bytes()
    truncated.write_bytes(data[: len(data) // 3])
    for path in (junk, truncated):
        r = upload(client, path)
        assert r.status_code == 202
        job = wait_done(client, r.json()["id"])
        assert job["status"] == "failed", job
        assert job["tracks"] is None
        assert "corrupt" in job["error"], job["error"]
        assert "uploads" not in job["error"]  # no path of the server's disk
    assert client.get("/readyz").status_code == 200  # nothing else was affected


def test_a_low_fps_samples_few_frames_and_still_completes(client: httpx.Client, people_avi: Path) -> None:
    r = upload(client, people_avi, fps="0.1")  # one frame every 10 s: the last sample is at 0 s
    job = wait_done(client, r.json()["id"])
    assert job["status"] == "done", job  # was failed: "the video ended at 0.0 s ... truncated"
    assert job["duration_s"] > 9.0, job  # the last frame read, not the last frame sampled
    assert client.delete(f"/v1/videos/{job['id']}").status_code == 204


def test_video_jobs_are_listed_newest_first_in_pages(client: httpx.Client, tmp_path: Path) -> None:
    junk = tmp_path / "junk.avi"
    junk.write_bytes(b"not a video")
    made = [upload(client, junk).json()["id"] for _ in range(3)]
    everything = client.get("/v1/videos", params={"limit": 100}).json()
    assert everything["next_cursor"] is None
    newest = [v["id"] for v in everything["items"]]
    assert newest[:3] == made[::-1]  # newest first
    seen, cursor = [], None
    while True:
        page = client.get("/v1/videos", params={"limit": 2, **({"cursor": cursor} if cursor else {})}).json()
        assert len(page["items"]) <= 2
        seen += [v["id"] for v in page["items"]]
        if (cursor := page["next_cursor"]) is None:
            break
    assert seen == newest  # every job once, in the same order
    for job_id in made:
        wait_done(client, job_id)
        assert client.delete(f"/v1/videos/{job_id}").status_code == 204
    for limit in (0, 101):
        r = client.get("/v1/videos", params={"limit": limit})
        assert r.status_code == 422 and r.json()["error"]["code"] == "validation_error"


def test_bad_uploads_are_refused_with_the_envelope(client: httpx.Client, tmp_path: Path) -> None:
    r = client.post("/v1/videos", content=b"{}", headers={"Content-Type": "application/json"})
    assert r.status_code == 415 and r.json()["error"]["code"] == "unsupported_media_type"
    r = client.post("/v1/videos", files={"other": ("a.txt", b"x")})
    assert r.status_code == 422 and r.json()["error"]["code"] == "validation_error"
    big = tmp_path / "big.avi"
    big.write_bytes(b"\x00" * (VIDEO_LIMIT + 1000))
    r = upload(client, big)
    assert r.status_code == 413 and "FACEREC_VIDEO_MAX_UPLOAD_BYTES" in r.json()["error"]["message"]
    small = tmp_path / "a.avi"
    small.write_bytes(b"x" * 100)
    r = upload(client, small, fps="0")
    assert r.status_code == 422 and r.json()["error"]["code"] == "validation_error"
    assert client.get("/v1/videos/nope").json()["error"]["code"] == "not_found"
    long_boundary = {"Content-Type": "multipart/form-data; boundary=" + "a" * 300}  # over python-multipart's 256
    r = client.post("/v1/videos", content=b"--" + b"a" * 300 + b"\r\n", headers=long_boundary)
    assert r.status_code == 422 and r.json()["error"]["code"] == "validation_error", r.text
    r = client.post("/v1/videos", data={"video": "x" * 70_000}, files={"other": ("a.bin", b"x")})
    assert r.status_code == 422 and "must be a file part" in r.json()["error"]["message"], r.text
    before = client.get("/v1/videos", params={"limit": 100}).json()["items"]
    assert not any(v["status"] == "queued" and v["bytes"] == 0 for v in before)  # no refused upload left a job


def test_an_upload_cut_short_is_refused_and_leaves_nothing(
    client: httpx.Client, server: Server, people_avi: Path
) -> None:
    """A body that ends before its closing boundary (a client that stopped sending) is 422, not a queued job of
    half a video."""
    head = b'--cut\r\nContent-Disposition: form-data; name="video"; filename="a.avi"\r\n\r\n'

    def state() -> tuple[list[str], list[str]]:
        jobs = client.get("/v1/videos", params={"limit": 100}).json()["items"]
        return [j["id"] for j in jobs], sorted(p.name for p in (server.data / "uploads").glob("*.video"))

    before = state()
    for body in (head + people_avi.read_bytes()[:500_000], head[:40]):
        r = client.post("/v1/videos", content=body, headers={"Content-Type": "multipart/form-data; boundary=cut"})
        assert r.status_code == 422 and r.json()["error"]["code"] == "validation_error", r.text
        assert "cut short" in r.json()["error"]["message"]
    assert state() == before


def test_deleting_a_running_job_stops_it(
    client: httpx.Client, server: Server, people_avi: Path, tmp_path: Path
) -> None:
    video_id = upload(client, people_avi, fps="10").json()["id"]
    deadline = time.monotonic() + 60
    while client.get(f"/v1/videos/{video_id}").json()["status"] != "running":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert client.delete(f"/v1/videos/{video_id}").status_code == 204
    assert client.get(f"/v1/videos/{video_id}").status_code == 404
    assert not list((server.data / "uploads").glob(f"{video_id}*"))
    junk = tmp_path / "junk.avi"
    junk.write_bytes(b"not a video")
    started = time.monotonic()
    job = wait_done(client, upload(client, junk).json()["id"])  # next in line: the runner is free at once
    assert job["status"] == "failed" and time.monotonic() - started < 5.0
    assert client.get("/v1/events", params={"source": f"video:{video_id}"}).json()["items"] == []
    assert client.delete(f"/v1/videos/{job['id']}").status_code == 204


def test_a_job_survives_a_restart_without_duplicate_events(
    server: Server, client: httpx.Client, subjects: dict[str, str], people_avi: Path
) -> None:
    r = upload(client, people_avi, fps="10")
    video_id = r.json()["id"]
    time.sleep(1.5)  # queued or running when the server stops
    server.restart()
    job = wait_done(client, video_id)
    assert job["status"] == "done", job
    events = client.get("/v1/events", params={"source": f"video:{video_id}", "limit": 1000}).json()["items"]
    assert len(events) == len(job["tracks"]) == 4
    assert not list((server.data / "uploads").glob(f"{video_id}*"))  # not kept after processing
    assert client.delete(f"/v1/videos/{video_id}").status_code == 204
    assert client.get(f"/v1/videos/{video_id}").status_code == 404


def test_erasing_a_subject_erases_its_events(client: httpx.Client, subjects: dict[str, str]) -> None:
    sid = subjects["madonna"]
    assert client.get("/v1/events", params={"subject_id": sid}).json()["items"]
    assert client.delete(f"/v1/subjects/{sid}").status_code == 204
    assert client.get("/v1/events", params={"subject_id": sid}).json()["items"] == []
    assert client.get("/v1/events", params={"subject_id": subjects["elton_john"]}).json()["items"]


def test_events_export_csv_matches_the_api(client: httpx.Client, server: Server, tmp_path: Path) -> None:
    import csv

    from typer.testing import CliRunner

    from service.cli import app

    out = tmp_path / "attendance.csv"
    result = CliRunner().invoke(app, ["events", "export", "--csv", "--data", str(server.data), "-o", str(out)])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(out.open()))
    api = client.get("/v1/events", params={"limit": 1000}).json()["items"]
    assert [r["id"] for r in rows] == [e["id"] for e in api]
    assert [r["name"] for r in rows] == [e["name"] or "" for e in api]
    assert rows[0]["time"] == api[0]["time"]
    elton = client.get("/v1/subjects").json()["items"]
    sid = next(s["id"] for s in elton if s["name"] == "elton_john")
    only = CliRunner().invoke(app, ["events", "export", "--data", str(server.data), "--subject-id", sid])
    assert only.exit_code == 0
    for bad in (
        ["-o", str(tmp_path)],
        ["-o", str(tmp_path / "missing" / "x.csv")],
        ["--since", "nan"],
        ["-o", "/dev/full"],  # a full disk: was a traceback
        ["--since", "5", "--until", "1"],  # swapped: was an empty sheet, as if nobody came (the API's 422)
    ):
        refused = CliRunner().invoke(app, ["events", "export", "--data", str(server.data), *bad])
        assert refused.exit_code in (1, 2) and "Traceback" not in refused.output, (bad, refused.output)
        assert refused.exception is None or isinstance(refused.exception, SystemExit), (bad, refused.exception)
    assert {r["name"] for r in csv.DictReader(only.stdout.splitlines())} == {"elton_john"}
    # a file the disk cannot hold (here: over the process's file size limit) is one line, and no partial sheet
    cut = tmp_path / "cut.csv"
    limit = lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (300, 300))  # noqa: E731
    cmd = [sys.executable, "-m", "service.cli", "events", "export", "--data", str(server.data), "-o", str(cut)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=REPO, preexec_fn=limit)
    assert proc.returncode == 1 and proc.stderr.startswith(f"error: cannot write {cut}: "), proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and not cut.exists(), proc.stderr
