"""Open video files, network streams and local cameras with OpenCV's FFmpeg backend; read RGB frames.

A source is a file path, a URL (``rtsp://``, ``rtsps://``, ``http(s)://`` MJPEG or anything FFmpeg opens) or a
local camera (``/dev/videoN`` or a bare index ``N``, read with OpenCV's V4L2 backend). :func:`redact` hides the
credentials of a URL for logs and API answers.
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

from service.addresses import redact_url

# FFmpeg's and OpenCV's own console messages ("moov atom not found", "can't be used to capture by name") repeat
# what VideoError says, in the middle of a CLI's output or a server's log; quiet unless the operator asks for them
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # AV_LOG_QUIET, read when the FFmpeg backend first opens
if "OPENCV_LOG_LEVEL" not in os.environ:
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)  # set OPENCV_LOG_LEVEL to see its warnings


class VideoError(Exception):
    """A source that cannot be opened or read; the message is safe to show (credentials redacted)."""


def redact(source: str) -> str:
    """``source`` as logs and API answers show it: a URL's password, a bare user (a camera's token) and
    secret-looking query values hidden (:func:`service.addresses.redact_url`)."""
    return redact_url(source, bare_user_is_secret=True)


CAMERA_SOURCE = re.compile(r"(?:/dev/video)?([0-9]{1,4})")
"""A local camera: ``N`` or ``/dev/videoN`` (ASCII digits: ``str.isdigit``'s other scripts are not indexes)."""


def camera_index(source: str) -> int | None:
    """The V4L2 camera index of ``"N"`` or ``"/dev/videoN"``, else None."""
    m = CAMERA_SOURCE.fullmatch(source.strip())
    return int(m.group(1)) if m else None


def open_capture(source: str, *, timeout_s: float = 5.0) -> cv2.VideoCapture:
    """An opened capture for ``source``; :class:`VideoError` when it does not open within ``timeout_s``."""
    index = camera_index(source)
    if index is not None:
        cap = cv2.VideoCapture(index, cv2.CAP_V4L2)
    else:
        ms = int(timeout_s * 1000)
        params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, ms]
        cap = cv2.VideoCapture(source, cv2.CAP_FFMPEG, params)
    if not cap.isOpened():
        cap.release()
        raise VideoError(f"cannot open {redact(source)}")
    return cap


@dataclass(frozen=True, slots=True)
class VideoInfo:
    """What the container says: frames per second (0 if unknown), frame count (0 if unknown), size (px)."""

    fps: float
    frames: int
    width: int
    height: int

    @property
    def duration_s(self) -> float:
        return self.frames / self.fps if self.fps > 0 and self.frames > 0 else 0.0


def info(cap: cv2.VideoCapture) -> VideoInfo:
    fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
    return VideoInfo(
        fps if 0 < fps < 1000 else 0.0,
        max(int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0), 0),
        int(cap.get(cv2.CAP_PROP_FRAME_WIDTH) or 0),
        int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT) or 0),
    )


NATIVE_FPS = 25.0
"""The frame rate assumed for a file whose container does not say (frames per second)."""


def check_complete(meta: VideoInfo, read: FrameClock) -> None:
    """:class:`VideoError` when a file read to its end (``read``: how far) stopped well before the duration its
    header announces (it is truncated or corrupt), or held a single frame (a photo: FFmpeg reads a JPEG or PNG as a
    video of one frame, in which nobody can be tracked, so a job on it was done, with nobody seen)."""
    if read.frames == 1:
        raise VideoError("the file holds a single frame (a still image): a video is needed; POST /v1/identify a photo")
    end_s = read.last_s
    if meta.duration_s > 0 and end_s < 0.9 * meta.duration_s - 1.0 / max(meta.fps, 1.0) * 2:
        raise VideoError(
            f"the video ended at {end_s:.1f} s of the {meta.duration_s:.1f} s its header announces: "
            "it is truncated or corrupt"
        )


def to_rgb(frame: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    """An OpenCV BGR (or grey) frame as contiguous RGB uint8."""
    if frame.ndim == 2:
        return np.ascontiguousarray(cv2.cvtColor(frame, cv2.COLOR_GRAY2RGB))
    return np.ascontiguousarray(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))


@dataclass(slots=True)
class FrameClock:
    """Where :func:`sample_frames` has got to: the time (s) of the last frame grabbed, sampled or not, and how
    many frames were grabbed."""

    last_s: float = 0.0
    frames: int = 0


def sample_frames(
    cap: cv2.VideoCapture, fps: float | None, clock: FrameClock | None = None
) -> Generator[tuple[float, npt.NDArray[np.uint8]]]:
    """``(t_s, rgb)`` for the frames of a file, ``fps`` frames per second of video time (None: every frame).

    Times are the container's timestamps (s from the start), or frame index / fps when it has none. Frames
    between samples are grabbed but not decoded to RGB; ``clock`` follows every frame grabbed. Raises
    :class:`VideoError` when not one frame decodes.
    """
    native = info(cap).fps or NATIVE_FPS
    step = 1.0 / fps if fps else 0.0
    next_t = 0.0
    index = 0
    read = 0
    while cap.grab():
        pos = cap.get(cv2.CAP_PROP_POS_MSEC)
        t = pos / 1000.0 if pos and pos > 0 else index / native
        index += 1
        if clock is not None:
            clock.last_s = t
            clock.frames += 1
        if t + 1e-6 < next_t:
            continue
        ok, frame = cap.retrieve()
        if not ok or frame is None:
            continue
        read += 1
        next_t = t + step if step else 0.0
        yield t, to_rgb(np.asarray(frame, dtype=np.uint8))
    if read == 0:
        raise VideoError("no frame could be decoded: the file is not a video FFmpeg can read, or it is corrupt")


def latest_frames(
    cap: cv2.VideoCapture,
    fps: float,
    *,
    clock: Callable[[], float] = time.monotonic,
    stop: threading.Event | None = None,
) -> Generator[tuple[float, npt.NDArray[np.uint8]]]:
    """``(t_s, rgb)`` from a live source, at most ``fps`` per second, always the newest frame: a reader thread
    keeps reading (so the source's buffer never fills up and lag does not grow) and frames the consumer is too
    slow for are dropped. ``t_s`` is ``clock()`` when the frame was read. Ends when the source stops or, within
    0.5 s, when ``stop`` is set (also while the source sends nothing).

    The reader thread owns ``cap`` from the first frame on and releases it when it stops, so ``read`` and
    ``release`` never overlap: closing the generator waits up to 5 s for the reader (a stalled source's read
    times out by then, :func:`open_capture`) and does not hold the caller up longer."""
    slot: list[tuple[float, npt.NDArray[np.uint8]] | None] = [None]
    cond = threading.Condition()
    done = threading.Event()

    def read() -> None:
        try:
            while not done.is_set():
                ok, frame = cap.read()
                with cond:
                    if not ok or frame is None:
                        done.set()
                    else:
                        slot[0] = (clock(), np.asarray(frame, dtype=np.uint8))
                    cond.notify()
        finally:
            cap.release()

    reader = threading.Thread(target=read, name="facerec-watch-reader", daemon=True)
    reader.start()
    period = 1.0 / fps
    try:
        while True:
            started = time.monotonic()
            with cond:
                while slot[0] is None and not done.is_set() and not (stop is not None and stop.is_set()):
                    cond.wait(0.5)
                item, slot[0] = slot[0], None
            if item is None or (stop is not None and stop.is_set()):
                return
            yield item[0], to_rgb(item[1])
            time.sleep(max(0.0, started + period - time.monotonic()))
    finally:
        done.set()
        reader.join(5.0)
