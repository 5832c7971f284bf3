"""Fast tests of the parts under the video features: the tracker, URL redaction and webhook
deliveries to a real local HTTP receiver (signatures checked here with hmac, retries, a restart)."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any, cast

import numpy as np
import pytest

from embeddings import Box, Detection, Landmarks
from service.events.store import Event, SQLiteEventStore
from service.events.webhooks import WebhookSender
from service.video import jobs
from service.video.decision import Vote
from service.video.decode import redact
from service.video.deps import FrameDeps
from service.video.jobs import JobRunner
from service.video.jobstore import Job, SQLiteJobStore
from service.video.pipeline import PipelineConfig, TrackDecision, for_period
from service.video.tracker import Tracker
from tests.video.helpers import WebhookReceiver, sign

CROP = np.zeros((160, 160, 3), dtype=np.uint8)


def det(x: float, y: float, size: float = 80.0) -> Detection:
    pts = (x + size / 2, y + size / 2)
    return Detection(Box(x, y, size, size), Landmarks(pts, pts, pts, pts, pts), 0.99)


def feed(tracker: Tracker, t: float, boxes: list[tuple[float, float]]) -> tuple[list[int], list[int]]:
    dets = [det(x, y) for x, y in boxes]
    active, ended = tracker.update(t, dets, [CROP] * len(dets), [100.0] * len(dets))
    return [tr.id for tr in active], [tr.id for tr in ended]


def test_two_faces_crossing_in_lanes_keep_their_tracks() -> None:
    tracker = Tracker(max_age_s=1.0)
    ids = set()
    for i in range(30):  # 3 s at 10 fps: one moves right in the top lane, one left in the bottom lane
        active, ended = feed(tracker, i / 10, [(20 + 20 * i, 10), (620 - 20 * i, 200)])
        ids.update(active)
        assert ended == []
    assert ids == {1, 2}
    top = next(tr for tr in tracker.tracks if tr.id == 1)
    assert top.velocity[0] > 100  # px/s to the right
    assert top.hits == 30 and len(top.views) == 5  # only the best views are kept


def test_a_fast_face_at_a_low_rate_is_followed_by_its_motion() -> None:
    tracker = Tracker(max_age_s=1.0)
    seen = set()
    for i in range(8):  # 90 px per frame, the box is 80 px: no overlap between frames
        active, _ = feed(tracker, i / 5, [(10 + 90 * i, 50)])
        seen.update(active)
    assert seen == {1}


def test_a_track_ends_after_max_age_and_a_new_face_gets_a_new_id() -> None:
    tracker = Tracker(max_age_s=1.0)
    feed(tracker, 0.0, [(100, 100)])
    feed(tracker, 0.1, [(105, 100)])
    _, ended = feed(tracker, 1.0, [])
    assert ended == []
    _, ended = feed(tracker, 1.2, [])
    assert ended == [1]
    active, _ = feed(tracker, 1.3, [(105, 100)])
    assert active == [2]
    assert [tr.id for tr in tracker.finish()] == [2]


def test_redact_hides_passwords_and_secret_query_values() -> None:
    assert redact("rtsp://admin:hunter2@10.0.0.5:554/live") == "rtsp://admin:***@10.0.0.5:554/live"
    assert (
        redact("https://cam.example/video.mjpg?token=abc&res=hd") == "https://cam.example/video.mjpg?token=***&res=hd"
    )
    assert redact("rtsp://tok@cam/x") == "rtsp://***@cam/x"
    assert redact("/dev/video0") == "/dev/video0"
    assert "hunter2" not in redact("rtsp://u:hunter2@h/p?password=hunter2")


def event(i: int, subject: str | None = "s1", source: str = "stream:a", at: float | None = None) -> Event:
    return Event(f"e{i}", time.time() if at is None else at, source, i, subject, subject, 0.5, 0.01, 0.0, 1.0, 5)


def wait_for(cond, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_webhooks_are_signed_retried_and_survive_a_restart(tmp_path: Path) -> None:
    receiver = WebhookReceiver(fail_first=2)
    store = SQLiteEventStore(tmp_path)
    try:
        # the receiver is down at first: deliveries wait in the outbox
        sender = WebhookSender(store, url="http://127.0.0.1:9/nothing", secret="k", base_s=0.05, max_s=0.2).start()
        store.add([event(1), event(2)], outbox=True)
        sender.wake()
        time.sleep(0.5)
        sender.close()
        assert len(store.due(time.time() + 10, 10)) == 2
        store.close()

        store = SQLiteEventStore(tmp_path)  # a restart: the outbox is still there
        sender = WebhookSender(store, url=receiver.url, secret="k", base_s=0.05, max_s=0.2).start()
        wait_for(
            lambda: (
                len({json.loads(b)["event"]["id"] for h, b in receiver.requests if b}) == 2
                and not store.due(time.time() + 10, 10)
            )
        )
        sender.close()
        assert len(receiver.requests) >= 4  # two 503s were retried
        for headers, body in receiver.requests:
            ts = headers["x-facerec-timestamp"]
            assert headers["x-facerec-signature"] == sign("k", ts, body)
            assert abs(int(ts) - time.time()) < 60
            assert headers["x-facerec-event-id"] == json.loads(body)["event"]["id"]
        assert {e["id"] for e in receiver.events()} == {"e1", "e2"}
        assert receiver.events()[0]["time"].endswith("Z")
    finally:
        receiver.close()
        store.close()


def endless_receiver() -> tuple[socket.socket, str]:
    """A receiver that answers 200 and then sends a chunked body that never ends (until its socket closes)."""
    server = socket.create_server(("127.0.0.1", 0))

    def answer(conn: socket.socket) -> None:
        with conn:
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            chunk = b"%x\r\n%s\r\n" % (1 << 16, b"x" * (1 << 16))
            with contextlib.suppress(OSError):
                while True:
                    conn.sendall(chunk)

    def serve() -> None:
        with contextlib.suppress(OSError):
            while True:
                threading.Thread(target=answer, args=(server.accept()[0],), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    return server, f"http://127.0.0.1:{server.getsockname()[1]}/hook"


def test_a_receiver_whose_answer_never_ends_gets_its_delivery_and_holds_nothing(tmp_path: Path) -> None:
    """Only the status counts: the body is not read (it could fill the memory and stall the outbox forever)."""
    server, url = endless_receiver()
    store = SQLiteEventStore(tmp_path)
    sender = WebhookSender(store, url=url, secret="k", timeout_s=1.0, base_s=0.05, max_s=0.2).start()
    try:
        store.add([event(1), event(2)], outbox=True)
        sender.wake()
        wait_for(lambda: store.pending_count() == 0, timeout=10.0)
    finally:
        sender.close()
        server.close()
        store.close()


def test_deleting_jobs_that_do_not_run_leaves_nothing_in_the_runner(tmp_path: Path) -> None:
    """``DELETE /v1/videos/{id}`` cancels the job in the runner first: ids of jobs that are not running (done,
    queued, or no job at all: 404) were kept for ever, so memory grew with every deletion."""
    store = SQLiteJobStore(tmp_path)
    runner = JobRunner(store, cast(Any, None), keep_uploads=False, default_fps=5.0)  # not started: nothing runs
    try:
        for i in range(1000):
            runner.cancel(f"{i:032x}" * 100)
        assert not runner._cancelled
    finally:
        store.close()


def test_an_orphan_that_cannot_be_deleted_stops_neither_start_nor_the_runner(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The orphan sweep (at start and every ``SWEEP_INTERVAL_S``) logs a file it cannot delete (read-only or
    failing disk; here a directory, which ``unlink`` refuses even to root) instead of raising: that failed
    the server's start, or ended the runner's thread for good."""
    store = SQLiteJobStore(tmp_path)
    stuck = store.uploads / "stuck.video"
    stuck.mkdir(parents=True)
    os.utime(stuck, (time.time() - 2 * jobs.ORPHAN_IDLE_S,) * 2)
    monkeypatch.setattr(jobs, "SWEEP_INTERVAL_S", 0.0)
    deps = FrameDeps(lambda: None, lambda: None, cast(Any, None), cast(Any, None), threading.Semaphore())
    runner = JobRunner(store, deps, keep_uploads=False, default_fps=5.0).start()
    try:
        time.sleep(1.5)  # the runner sweeps again on each idle round (about every second)
        assert runner._thread.is_alive()
        assert runner.sweep() == 0 and stuck.is_dir()
    finally:
        runner.close()
        store.close()


def test_an_upload_is_on_the_disk_before_it_is_acknowledged(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``receive_video`` returns (and the route answers 202) only after the file and its directory entry were
    fsynced: a power cut after the 202 cannot leave a queued job with an empty or partial file."""
    import asyncio

    from service.video import upload

    synced: list[str] = []
    real_fsync = upload.os.fsync

    def fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(upload.os, "fsync", fsync)

    class Request:
        def __init__(self) -> None:
            self.headers = {"content-type": "multipart/form-data; boundary=b"}

        async def stream(self) -> Any:
            yield b'--b\r\nContent-Disposition: form-data; name="video"; filename="a.avi"\r\n\r\nVIDEO\r\n--b--\r\n'

    path = tmp_path / "uploads" / "job.video"
    path.parent.mkdir()
    got = asyncio.run(upload.receive_video(cast(Any, Request()), path))
    assert got.size == 5 and path.read_bytes() == b"VIDEO"
    assert synced == [str(path), str(path.parent)]


@pytest.mark.parametrize("wrong", ["other-secret"])
def test_a_signature_with_another_secret_does_not_verify(wrong: str) -> None:
    from service.events.webhooks import sign as service_sign

    body = b'{"a":1}'
    assert service_sign("k", 1700000000, body) == sign("k", "1700000000", body)
    assert service_sign(wrong, 1700000000, body) != sign("k", "1700000000", body)


def test_a_face_that_left_the_frame_is_not_joined_to_one_entering() -> None:
    tracker = Tracker(max_age_s=1.0)
    size = (640, 360)
    for i in range(5):  # moving left, out of the frame
        tracker.update(i / 5, [det(200 - 60 * i, 100)], [CROP], [100.0], size)
    # 0.3 s later someone enters at the left edge, moving right: its own track, the first has ended
    active, ended = tracker.update(1.1, [det(0, 100)], [CROP], [100.0], size)
    assert [tr.id for tr in ended] == [1]
    assert [tr.id for tr in active] == [2]


def test_a_face_entering_stays_one_track_while_its_boxes_barely_overlap() -> None:
    """A camera's boxes of a stranger entering from the right, 5 frames/s (a CI failure's log): consecutive
    boxes overlap by a few pixels. A sliver of overlap must never score below no overlap at all, or the second
    box starts a track of its own and the person is announced twice."""
    tracker = Tracker(max_age_s=1.0)
    boxes = [(15.01, 529, 210, 56), (15.21, 473, 214, 58), (15.42, 420, 217, 57), (15.61, 367, 212, 57)]
    boxes += [(15.82, 313, 208, 58), (16.01, 259, 208, 58), (16.21, 206, 215, 59)]
    ids: set[int] = set()
    for t, x, y, size in boxes:
        active, ended = tracker.update(t, [det(x, y, size)], [CROP], [100.0], (640, 360))
        ids.update(tr.id for tr in active)
        assert ended == []
    assert ids == {1}


@pytest.mark.parametrize("step", [0.3, 0.6, 0.9, 0.95, 1.0, 1.2, 1.5])
def test_a_face_is_one_track_at_any_overlap_between_frames(step: float) -> None:
    """From a large overlap to none: one track for a face moving ``step`` box sides a frame, while a second face
    crosses the other way in a lane below."""
    tracker = Tracker(max_age_s=1.0)
    ids = set()
    for i in range(6):
        active, _ = feed(tracker, i / 5, [(10 + 80 * step * i, 20), (560 - 80 * step * i, 150)])
        ids.update(active)
    assert ids == {1, 2}


def test_a_track_takes_its_first_measured_velocity_whole() -> None:
    tracker = Tracker(max_age_s=1.0)
    feed(tracker, 0.0, [(100, 100)])
    feed(tracker, 0.2, [(140, 100)])
    assert tracker.tracks[0].velocity == pytest.approx((200.0, 0.0))  # px/s: not halved by a zero start


def test_csv_export_keeps_names_that_look_like_formulas_as_text(tmp_path: Path) -> None:
    """A subject named ``=HYPERLINK(...)`` (or starting with + - @) must not become a live formula when the
    attendance CSV is opened in a spreadsheet; JSON lines stay exact."""
    from typer.testing import CliRunner

    from service.cli import app

    store = SQLiteEventStore(tmp_path)
    names = ['=HYPERLINK("http://x.invalid","click")', "+1", "@me", "Ada"]
    events = [Event(f"e{i}", 1.7e9 + i, "video:v", i, f"s{i}", n, 0.4, 0.01, 0.0, 1.0, 3) for i, n in enumerate(names)]
    store.add(events, outbox=False)
    store.close()
    out = CliRunner().invoke(app, ["events", "export", "--csv", "--data", str(tmp_path)])
    assert out.exit_code == 0, out.output
    rows = list(csv.DictReader(io.StringIO(out.stdout)))
    assert [r["name"] for r in rows] == [f"'{n}" for n in names[:3]] + ["Ada"]
    assert [r["subject_id"] for r in rows] == ["s0", "s1", "s2", "s3"]
    lines = CliRunner().invoke(app, ["events", "export", "--jsonl", "--data", str(tmp_path)]).stdout.splitlines()
    assert [json.loads(line)["name"] for line in lines] == names


def test_a_track_outlives_a_few_sampling_periods() -> None:
    """Frames 2 s apart (fps 0.5) with tracks ending 1 s unseen: no track could ever reach a second frame."""
    config = PipelineConfig(fixed_threshold=1.0, max_fir=None, max_age_s=1.0)
    assert for_period(config, 2.0).max_age_s == 5.0
    assert for_period(config, 0.2).max_age_s == 1.0  # 5 frames/s: the configured age


class _Recorder:
    """Collects the events a job records (the runner's ``deps.recorder``)."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    def record(self, events: list[Event]) -> None:
        self.events.extend(events)


def _runner_reading(store: SQLiteJobStore, read: Any) -> tuple[JobRunner, _Recorder]:
    """A runner whose reading of a video is ``read(job)`` (the layers above the decoder, without a model)."""
    recorder = _Recorder()
    deps = FrameDeps(
        analyzer=lambda: None,
        gallery=lambda: None,
        config=lambda: PipelineConfig(fixed_threshold=0.7, max_fir=0.01),
        recorder=cast(Any, recorder),
        gate=threading.Semaphore(1),
    )
    runner = JobRunner(store, deps, keep_uploads=False, default_fps=5.0)
    runner._read = lambda job, analyzer: read(job)  # type: ignore[method-assign]
    return runner, recorder


def test_a_job_deleted_while_it_runs_records_nothing(tmp_path: Path) -> None:
    """A job deleted (through another replica, or between two progress checks) while it ran, or after it was
    picked and before it started: its events were recorded for a job that no longer exists, its upload kept."""
    store = SQLiteJobStore(tmp_path)
    seen = TrackDecision(1, Vote(None, None, 1.0, 3, 3, 0.7, 0.01), 0.0, 1.0, 3)  # an unknown person

    def read(job: Job) -> tuple[list[TrackDecision], float]:
        store.delete(job.id)
        return [seen], 1.0

    try:
        for when in ("while it runs", "before it starts"):
            upload = tmp_path / f"{when}.video"
            upload.write_bytes(b"video")
            job = store.create(f"{len(when):032x}", filename="v.mp4", path=upload, fps=None, size=5)
            runner, recorder = _runner_reading(store, read)
            if when == "before it starts":
                store.delete(job.id)
            runner._process(job, cast(Any, None))
            assert recorder.events == [], when
            assert not upload.exists(), when
    finally:
        store.close()
