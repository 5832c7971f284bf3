"""The web page's live webcam mode in headless Chromium: its fake webcam plays a scene of the 5-celebrity
photos (a Y4M file), the page sends frames to a real server, and the boxes follow the faces with their names."""

from __future__ import annotations

import itertools
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import httpx
import pytest

from bench.video_scenes import Scene
from tests.browser import csp_violations, wait_until
from tests.service.server import Server
from tests.service.test_web import CHROMIUM, CHROMIUM_ARGS
from tests.video.helpers import ENROLLED, enrol, people_scene

pytestmark = pytest.mark.slow
TIMEOUT_MS = 120_000


def write_y4m(scene: Scene, path: Path) -> Path:
    """The scene as an uncompressed YUV 4:2:0 stream, the format Chromium's fake webcam plays (looped)."""
    with path.open("wb") as out:
        out.write(f"YUV4MPEG2 W{scene.width} H{scene.height} F{int(scene.fps)}:1 Ip A1:1 C420jpeg\n".encode())
        for _, frame in scene.frames():
            out.write(b"FRAME\n" + cv2.cvtColor(frame, cv2.COLOR_BGR2YUV_I420).tobytes())
    return path


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, dataset: Path) -> Iterator[Server]:
    # the enrolment below and the tab's frames (~8 a second) share one loopback key: no per-key rate limit here
    srv = Server(tmp_path_factory.mktemp("live") / "data", env={"FACEREC_RATE_LIMIT_PER_MINUTE": "0"}).start()
    with httpx.Client(base_url=srv.url, timeout=120) as c:
        enrol(c, dataset)
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory, dataset: Path) -> Iterator[Any]:
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")
    if not Path(CHROMIUM).is_file() and shutil.which("chromium") is None:
        pytest.skip("chromium is not installed (apt-get install chromium)")
    y4m = write_y4m(people_scene(dataset, width=640, height=360, fps=10), tmp_path_factory.mktemp("cam") / "cam.y4m")
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(
            executable_path=CHROMIUM, args=[*CHROMIUM_ARGS, f"--use-file-for-fake-video-capture={y4m}"], headless=True
        )
        yield b
        b.close()


def test_live_mode_keeps_names_on_moving_faces(browser: Any, server: Server, tmp_path: Path) -> None:
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    violations = csp_violations(page)
    page.goto(server.url + "/")
    page.wait_for_selector("#status.ready", timeout=TIMEOUT_MS)
    page.click("#tab-live")
    page.click("#live-start")
    wait_until(page, "Object.values(window.liveState.names).includes('ben_afflek')", timeout=TIMEOUT_MS)
    # follow the faces for a few seconds: a named track keeps its name while its box moves
    samples: list[dict[str, Any]] = []
    end = time.monotonic() + 6.0
    while time.monotonic() < end:
        samples.extend(page.evaluate("window.liveState.faces"))
        time.sleep(0.1)
    by_track: dict[int, list[dict[str, Any]]] = {}
    for f in samples:
        if f["decided"] and f["name"]:
            by_track.setdefault(f["track_id"], []).append(f)
    moving = [t for t, fs in by_track.items() if len({round(f["box"]["x"]) for f in fs}) >= 5]
    assert moving, by_track.keys()
    for t in moving:
        assert len({f["name"] for f in by_track[t]}) == 1  # the name stays with its track
    names = set(page.evaluate("Object.values(window.liveState.names)"))
    assert names <= {*ENROLLED, "unknown"}
    # the page keeps sending frames one after another (the rate itself is a figure: bench/video.py live)
    assert page.evaluate("window.liveState.updates.length") >= 1
    assert "updates/s" in page.inner_text("#live-rate")
    assert "Seen:" in page.inner_text("#live-result")
    page.screenshot(path=str(tmp_path / "live.png"))
    page.click("#live-stop")
    assert violations == []  # the page works under its Content Security Policy
    page.close()


def test_live_mode_backs_off_while_the_server_is_busy(browser: Any, server: Server) -> None:
    """429 answers (with Retry-After) slow the page's frame loop down instead of hammering the server; once the
    server answers again the loop resumes at full speed."""
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    violations = csp_violations(page)
    busy_answers = 3
    sent: list[float] = []

    def frames(route: Any) -> None:
        sent.append(time.monotonic())
        if len(sent) <= busy_answers:
            body = '{"error": {"code": "rate_limited", "message": "too many requests"}}'
            route.fulfill(status=429, headers={"Retry-After": "2"}, content_type="application/json", body=body)
        else:
            route.continue_()

    page.route("**/v1/live/frames", frames)
    page.goto(server.url + "/")
    page.wait_for_selector("#status.ready", timeout=TIMEOUT_MS)
    page.click("#tab-live")
    page.click("#live-start")
    wait_until(page, "Object.values(window.liveState.names).length > 0", timeout=TIMEOUT_MS)
    gaps = [b - a for a, b in itertools.pairwise(sent[: busy_answers + 1])]
    assert all(g >= 1.9 for g in gaps), gaps  # each 429 made the page wait its Retry-After (2 s)
    assert len(sent) > busy_answers + 1  # and it went on after the busy spell
    page.click("#live-stop")
    assert violations == []  # the page works under its Content Security Policy
    page.close()
