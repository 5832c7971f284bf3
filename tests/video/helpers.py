"""Real sources for the video tests: scenes of the 5-celebrity photos, an RTSP server
(GStreamer's gst-rtsp-server, run by the system Python) and an HTTP webhook receiver."""

from __future__ import annotations

import hashlib
import hmac
import json
import shutil
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import cv2
import httpx

from bench.video_scenes import Actor, Scene, passes_served
from tests.service.server import free_port

ENROLLED = ("ben_afflek", "elton_john", "madonna")
STRANGER = "mindy_kaling"
SYSTEM_PYTHON = "/usr/bin/python3"
RTSP_SCRIPT = Path(__file__).with_name("rtsp_server.py")


def enrol(client: httpx.Client, dataset: Path, people: tuple[str, ...] = ENROLLED) -> dict[str, str]:
    """Enrol ``people`` from their first 5 train photos; name -> subject id."""
    ids = {}
    for person in people:
        sid = client.post("/v1/subjects", json={"name": person}).json()["id"]
        photos = sorted((dataset / "train" / person).glob("*.jpg"))[:5]
        files = [("images", (p.name, p.read_bytes(), "image/jpeg")) for p in photos]
        assert client.post(f"/v1/subjects/{sid}/faces", files=files).status_code == 201
        ids[person] = sid
    return ids


def val_photo(dataset: Path, person: str, index: int = 0) -> Path:
    return sorted((dataset / "val" / person).glob("*.jpg"))[index]


def people_scene(
    dataset: Path,
    *,
    width: int = 640,
    height: int = 360,
    fps: float = 10.0,
    loop_gap_s: float = 0.0,
    crossing_s: float = 3.0,
) -> Scene:
    """Four people cross a 640x360 background in two lanes: the three enrolled ones and a stranger; each is on
    stage ``crossing_s`` (3 s: two are on stage at once, one per lane, for a second)."""
    lane_h = height // 2 - 20
    people = [*ENROLLED, STRANGER]
    actors = []
    for i, person in enumerate(people):
        lane = i % 2
        start = 0.3 + i * 2.0
        top = 10 + lane * (height // 2)
        actors.append(Actor(val_photo(dataset, person), start, start + crossing_s, top, lane_h, lane == 0, person))
    return Scene(actors, width=width, height=height, fps=fps, duration_s=actors[-1].exit_s + 0.7 + loop_gap_s)


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The signature a receiver expects, computed here independently of the service's code."""
    return "sha256=" + hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


class WebhookReceiver:
    """A real HTTP server that records POSTs; ``fail_first`` answers 503 to that many requests first."""

    def __init__(self, fail_first: int = 0) -> None:
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.accepted: list[bytes] = []
        self.fail_first = fail_first
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with receiver.lock:
                    receiver.requests.append(({k.lower(): v for k, v in self.headers.items()}, body))
                    failing = receiver.fail_first > 0
                    receiver.fail_first -= 1 if failing else 0
                    if not failing:
                        receiver.accepted.append(body)
                self.send_response(503 if failing else 200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def events(self) -> list[dict[str, Any]]:
        """The events of the deliveries answered 200."""
        with self.lock:
            return [json.loads(body)["event"] for body in self.accepted]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def passes(scene: Scene, served: list[int], label: str, min_frames: int = 5) -> int:
    """How many times ``label`` crossed the frames served on one connection (runs of at least ``min_frames``
    consecutive frames showing that actor; :func:`bench.video_scenes.passes_served`)."""
    return passes_served(scene, [served], min_frames)[label]


class RtspServer:
    """GStreamer's RTSP server (Debian: ``gir1.2-gst-rtsp-server-1.0``, ``gstreamer1.0-plugins-good``,
    ``python3-gi``) serving a scene's frames as RTP/JPEG, looped, on ``rtsp://127.0.0.1:<port>/scene``."""

    def __init__(self, scene: Scene, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        for i, (_, frame) in enumerate(scene.frames()):
            cv2.imwrite(str(folder / f"frame{i:05d}.jpg"), frame, [cv2.IMWRITE_JPEG_QUALITY, 90])
        self.fps = scene.fps
        self.port = free_port()
        self.url = f"rtsp://127.0.0.1:{self.port}/scene"
        self.proc: subprocess.Popen[bytes] | None = None

    @staticmethod
    def available() -> str | None:
        """None when the server can run here, else why not."""
        if not Path(SYSTEM_PYTHON).is_file() or (
            shutil.which("gst-inspect-1.0") is None and not Path("/usr/lib/x86_64-linux-gnu/gstreamer-1.0").is_dir()
        ):
            return "GStreamer is not installed"
        probe = subprocess.run(
            [
                SYSTEM_PYTHON,
                "-c",
                "import gi; gi.require_version('GstRtspServer', '1.0'); from gi.repository import GstRtspServer",
            ],
            capture_output=True,
        )
        return (
            None
            if probe.returncode == 0
            else "gst-rtsp-server's Python bindings are missing: " + probe.stderr.decode()[-300:]
        )

    def start(self) -> RtspServer:
        log = open(self.folder / "rtsp.log", "wb")  # noqa: SIM115 - kept open for the child
        self.proc = subprocess.Popen(
            [SYSTEM_PYTHON, str(RTSP_SCRIPT), str(self.port), str(self.folder / "frame%05d.jpg"), str(int(self.fps))],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if b"ready" in (self.folder / "rtsp.log").read_bytes():
                return self
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        raise RuntimeError("the RTSP server did not start: " + (self.folder / "rtsp.log").read_text()[-1000:])

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.proc = None


def wait_done(client: httpx.Client, video_id: str, timeout: float = 240.0) -> dict[str, Any]:
    """The video job ``video_id`` once done or failed (polled every 0.3 s); AssertionError after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    job: dict[str, Any] = {}
    while time.monotonic() < deadline:
        job = client.get(f"/v1/videos/{video_id}").json()
        if job["status"] in ("done", "failed"):
            return job
        time.sleep(0.3)
    raise AssertionError(f"video {video_id} not finished after {timeout} s: {job}")
