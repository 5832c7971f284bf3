"""``facerec watch`` on a video file and on a live MJPEG camera, with the real models and a local gallery."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bench.video_scenes import MjpegServer, write_video
from service.cli import app
from service.gallery.lock import DataDirLock
from tests.service.server import REPO
from tests.video.helpers import ENROLLED, people_scene

pytestmark = pytest.mark.slow
NAMES = [p.replace("_", " ") for p in ENROLLED]  # `facerec enroll` names people after their folders


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory, dataset: Path) -> Path:
    """A local data dir with the three enrolled people (5 train photos each), enrolled by ``facerec enroll``."""
    root = tmp_path_factory.mktemp("cli-video")
    people = root / "people"
    for person in ENROLLED:
        (people / person).mkdir(parents=True)
        for p in sorted((dataset / "train" / person).glob("*.jpg"))[:5]:
            shutil.copy(p, people / person / p.name)
    result = CliRunner().invoke(app, ["enroll", str(people), "--data", str(root / "data"), "--json"])
    assert result.exit_code == 0, result.output
    return root / "data"


def test_watch_a_file_prints_one_decision_per_person(data: Path, dataset: Path, tmp_path: Path) -> None:
    video = write_video(people_scene(dataset), tmp_path / "people.mp4")
    result = CliRunner().invoke(app, ["watch", str(video), "--json", "--fps", "10", "--data", str(data)])
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert sorted(d["name"] for d in lines if d["name"]) == sorted(NAMES), lines
    assert [d["name"] for d in lines].count(None) == 1
    table = CliRunner().invoke(app, ["watch", str(video), "--data", str(data)])
    assert table.exit_code == 0 and "unknown" in table.stdout and "madonna" in table.stdout


def test_watch_a_live_camera_until_interrupted(data: Path, dataset: Path) -> None:
    camera = MjpegServer(people_scene(dataset)).start()
    env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "service.cli", "watch", camera.url, "--json", "--data", str(data)],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        seen: list[dict[str, object]] = []
        deadline = time.monotonic() + 120
        assert proc.stdout is not None
        while time.monotonic() < deadline and not {d["name"] for d in seen} >= set(NAMES):
            line = proc.stdout.readline()
            if not line:
                break
            seen.append(json.loads(line))
        assert {d["name"] for d in seen} >= set(NAMES), seen
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=60)  # keeps reading its output: a full pipe must not hold the exit up
        assert proc.returncode == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        camera.stop()


def test_watch_refuses_a_missing_file(data: Path) -> None:
    result = CliRunner().invoke(app, ["watch", "/nonexistent.mp4", "--data", str(data)])
    assert result.exit_code != 0


def test_watch_names_a_folder_and_prints_one_line_for_a_broken_video(data: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["watch", str(tmp_path), "--data", str(data)], env={"COLUMNS": "300"})
    assert result.exit_code == 2 and "not a file" in result.output
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"junk" * 100)
    # a real process: FFmpeg and OpenCV write to the C-level stderr, which CliRunner does not see
    proc = subprocess.run(
        [sys.executable, "-m", "service.cli", "watch", str(broken), "--data", str(data)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
        env={k: v for k, v in os.environ.items() if not k.startswith("OPENCV_")},
    )
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.strip().splitlines() == [f"error: cannot open {broken}"], proc.stderr


def test_watch_on_a_data_dir_in_use_says_how_to_send_the_source_to_the_server(data: Path, tmp_path: Path) -> None:
    """A file was told to be added "with POST /v1/streams" (a camera's advice): a file is uploaded to /v1/videos."""
    video = tmp_path / "clip.avi"
    video.write_bytes(b"not read")
    lock = DataDirLock(data)
    lock.acquire()  # as a running server holds it
    try:
        for source, advice in ((str(video), "POST /v1/videos"), ("rtsp://cam.example/stream", "POST /v1/streams")):
            result = CliRunner().invoke(app, ["watch", source, "--data", str(data)])
            assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
            lines = result.output.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith("error: ") and lines[0].endswith(advice), result.output
    finally:
        lock.release()


def test_watch_a_truncated_file_prints_its_decisions_then_one_error(data: Path, dataset: Path, tmp_path: Path) -> None:
    """A file cut short (a third of an AVI: 3.4 s of the 10 s its header announces) printed the people of its
    first seconds and exited 0, where a video job on it fails as truncated: the user took it for the whole video."""
    whole = write_video(people_scene(dataset), tmp_path / "people.avi").read_bytes()
    cut = tmp_path / "cut.avi"
    cut.write_bytes(whole[: len(whole) // 3])
    result = CliRunner().invoke(app, ["watch", str(cut), "--json", "--data", str(data)])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
    names = [json.loads(line)["name"] for line in result.stdout.splitlines()]
    assert names[0] == "ben afflek" and len(names) <= 2, result.stdout  # who crossed in the first 3.4 s
    error = result.stderr.strip().splitlines()
    assert len(error) == 1 and error[0].startswith("error: the video ended at 3.") and "truncated" in error[0], error


def test_watch_into_a_full_disk_is_one_error_line(data: Path, dataset: Path, tmp_path: Path) -> None:
    """``facerec watch CAMERA > door.log`` on a disk that filled up ended in a traceback; now one line."""
    video = write_video(people_scene(dataset), tmp_path / "people.mp4")
    with open("/dev/full", "w") as full:  # a real device: every write fails with ENOSPC
        proc = subprocess.run(
            [sys.executable, "-m", "service.cli", "watch", str(video), "--data", str(data)],
            stdout=full,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
            cwd=REPO,
        )
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.strip().splitlines() == ["error: cannot write the output: No space left on device"], proc.stderr
