"""Synthetic camera scenes for tests and benchmarks: photos of people cross a textured background; a small
HTTP MJPEG camera (:class:`MjpegServer`) that plays a scene in real time.

An :class:`Actor` is one photo (a person) that enters from one side at ``enter_s``, crosses the frame at a
steady speed and has left at ``exit_s``, with a slight bob up and down. :func:`render` draws the frame at a
time; :func:`write_video` encodes a whole scene with OpenCV's FFmpeg backend (mp4v in .mp4, MJPG in .avi).
"""

from __future__ import annotations

import math
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt


@dataclass(frozen=True)
class Actor:
    """A photo crossing the frame. ``height`` is its drawn height (px), ``y`` its top (px); ``left_to_right``."""

    image: Path
    enter_s: float
    exit_s: float
    y: int
    height: int
    left_to_right: bool = True
    label: str = ""


def background(width: int, height: int, seed: int = 7) -> npt.NDArray[np.uint8]:
    """A faceless textured BGR background: smooth colour noise over a gradient."""
    rng = np.random.default_rng(seed)
    small = rng.integers(40, 220, size=(max(height // 40, 2), max(width // 40, 2), 3), dtype=np.uint8)
    tex = cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC)
    grad = np.linspace(0.7, 1.1, width, dtype=np.float32)[None, :, None]
    return np.clip(tex.astype(np.float32) * grad, 0, 255).astype(np.uint8)


class Scene:
    """Actors over a background, ``width`` x ``height`` px at ``fps`` frames per second for ``duration_s``."""

    def __init__(
        self,
        actors: Sequence[Actor],
        *,
        width: int = 640,
        height: int = 360,
        fps: float = 10.0,
        duration_s: float | None = None,
    ) -> None:
        self.actors = list(actors)
        self.width, self.height, self.fps = width, height, fps
        self.duration_s = duration_s if duration_s is not None else max(a.exit_s for a in actors) + 0.5
        self.bg = background(width, height)
        self._sprites: dict[Path, npt.NDArray[np.uint8]] = {}

    def _sprite(self, actor: Actor) -> npt.NDArray[np.uint8]:
        if actor.image not in self._sprites:
            img = cv2.imread(str(actor.image), cv2.IMREAD_COLOR)
            if img is None:
                raise ValueError(f"cannot read {actor.image}")
            scale = actor.height / img.shape[0]
            size = (max(int(img.shape[1] * scale), 1), actor.height)
            self._sprites[actor.image] = np.asarray(cv2.resize(img, size, interpolation=cv2.INTER_AREA), np.uint8)
        return self._sprites[actor.image]

    def position(self, actor: Actor, t: float) -> tuple[int, int] | None:
        """The top-left corner (px) of the actor at time ``t``, None when off stage."""
        if not actor.enter_s <= t <= actor.exit_s:
            return None
        w = self._sprite(actor).shape[1]
        f = (t - actor.enter_s) / max(actor.exit_s - actor.enter_s, 1e-6)
        x = -w + f * (self.width + w)
        if not actor.left_to_right:
            x = self.width - f * (self.width + w)
        y = actor.y + int(6 * math.sin(2 * math.pi * t))
        return int(x), y

    def actor_at(self, t: float, x: float, y: float) -> str | None:
        """The label of the actor whose drawn photo holds the point ``(x, y)`` (px) at time ``t``, else None."""
        for actor in self.actors:
            pos = self.position(actor, t)
            if pos is None:
                continue
            h, w = self._sprite(actor).shape[:2]
            if pos[0] <= x <= pos[0] + w and pos[1] <= y <= pos[1] + h:
                return actor.label
        return None

    def render(self, t: float) -> npt.NDArray[np.uint8]:
        """The BGR frame at time ``t`` (s)."""
        frame = self.bg.copy()
        for actor in self.actors:
            pos = self.position(actor, t)
            if pos is None:
                continue
            sprite = self._sprite(actor)
            x, y = pos
            h, w = sprite.shape[:2]
            x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + w, self.width), min(y + h, self.height)
            if x1 > x0 and y1 > y0:
                frame[y0:y1, x0:x1] = sprite[y0 - y : y1 - y, x0 - x : x1 - x]
        return frame

    def frames(self) -> Iterator[tuple[float, npt.NDArray[np.uint8]]]:
        n = round(self.duration_s * self.fps)
        for i in range(n):
            t = i / self.fps
            yield t, self.render(t)


def write_video(scene: Scene, path: Path) -> Path:
    """Encode the scene to ``path`` (.mp4: mp4v; .avi: MJPG) with OpenCV's FFmpeg backend."""
    fourcc = cv2.VideoWriter.fourcc(*("MJPG" if path.suffix == ".avi" else "mp4v"))
    writer = cv2.VideoWriter(str(path), cv2.CAP_FFMPEG, fourcc, scene.fps, (scene.width, scene.height))
    if not writer.isOpened():
        raise RuntimeError(f"OpenCV cannot write {path}")
    try:
        for _, frame in scene.frames():
            writer.write(frame)
    finally:
        writer.release()
    return path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def passes_served(scene: Scene, served: Sequence[Sequence[int]], min_frames: int = 5) -> Counter[str]:
    """Per actor label, how many times a camera showed them crossing: runs of at least ``min_frames``
    consecutive frames (scene frame indices, one list per connection) in which the actor is on stage."""
    out: Counter[str] = Counter()
    for frames in served:
        for actor in scene.actors:
            run = 0
            for index in [*frames, -1]:
                if index >= 0 and scene.position(actor, index / scene.fps) is not None:
                    run += 1
                    continue
                out[actor.label] += run >= min_frames
                run = 0
    return out


class MjpegServer:
    """Serves a scene, looped in real time, as ``multipart/x-mixed-replace`` JPEGs on ``url``; can be stopped and
    started again on the same port (a camera going away and coming back)."""

    def __init__(self, scene: Scene, port: int | None = None) -> None:
        self.scene = scene
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}/stream.mjpg"
        self.jpegs = [
            cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes() for _, frame in scene.frames()
        ]
        self.server: ThreadingHTTPServer | None = None
        self.stopping = threading.Event()
        self.served: list[list[int]] = []
        """Per connection (over all restarts), the scene frame index of every frame sent on it, in order: two
        connections served at once interleave in time, so a person's passes are counted per connection."""

    def start(self) -> MjpegServer:
        owner = self
        self.stopping.clear()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.end_headers()
                period = 1.0 / owner.scene.fps
                start = time.monotonic()
                i = 0
                sent: list[int] = []
                owner.served.append(sent)
                try:
                    while not owner.stopping.is_set():
                        jpg = owner.jpegs[i % len(owner.jpegs)]
                        sent.append(i % len(owner.jpegs))
                        self.wfile.write(
                            b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: "
                            + str(len(jpg)).encode()
                            + b"\r\n\r\n"
                            + jpg
                            + b"\r\n"
                        )
                        i += 1
                        time.sleep(max(0.0, start + i * period - time.monotonic()))
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        """Close the listening socket and every open connection (the camera dies)."""
        self.stopping.set()
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None
        time.sleep(0.2)
