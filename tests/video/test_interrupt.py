"""Stopping a live ``facerec watch``: Ctrl-C sets a flag (never raises inside a network call) and the frame
generator ends soon after it, even while the source sends nothing."""

from __future__ import annotations

import os
import signal
import threading
import time

import numpy as np
import pytest

from service.commands.video import stop_requested
from service.video.decode import latest_frames


class StalledCapture:
    """A capture whose ``read`` gives one frame, then blocks (a camera that stopped sending) until released."""

    def __init__(self) -> None:
        self.released = threading.Event()
        self.reads = 0

    def read(self) -> tuple[bool, np.ndarray | None]:
        self.reads += 1
        if self.reads == 1:
            return True, np.zeros((8, 8, 3), np.uint8)
        self.released.wait(30)
        return False, None

    def release(self) -> None:
        self.released.set()


def test_the_frames_of_a_stalled_source_end_soon_after_stop() -> None:
    cap = StalledCapture()
    stop = threading.Event()
    frames = latest_frames(cap, 50.0, stop=stop)  # type: ignore[arg-type]
    _t, rgb = next(frames)
    assert rgb.shape == (8, 8, 3)
    threading.Timer(0.2, stop.set).start()
    started = time.monotonic()
    with pytest.raises(StopIteration):
        next(frames)
    # 0.5 s to see the flag, then up to 5 s for the reader (a real capture's read times out by then)
    assert time.monotonic() - started < 7.0
    assert not cap.released.is_set(), "the generator must end without the source ending"
    cap.release()


def test_the_first_ctrl_c_sets_the_flag_and_the_second_interrupts() -> None:
    before = signal.getsignal(signal.SIGINT)
    with stop_requested() as stop:
        os.kill(os.getpid(), signal.SIGINT)
        deadline = time.monotonic() + 2
        while not stop.is_set() and time.monotonic() < deadline:
            time.sleep(0.01)  # the handler runs in the main thread between bytecodes
        assert stop.is_set()
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)
    assert signal.getsignal(signal.SIGINT) is before


class CountingCapture:
    """A capture of ``frames`` frames that records whether ``release`` ever came while a ``read`` ran."""

    def __init__(self, frames: int) -> None:
        self.left = frames
        self.reading = False
        self.released_during_read = False
        self.releases = 0

    def read(self) -> tuple[bool, np.ndarray | None]:
        self.reading = True
        time.sleep(0.01)
        self.reading = False
        if self.left <= 0:
            return False, None
        self.left -= 1
        return True, np.zeros((8, 8, 3), np.uint8)

    def release(self) -> None:
        self.released_during_read |= self.reading
        self.releases += 1


def test_the_reader_releases_the_capture_after_its_last_read() -> None:
    cap = CountingCapture(5)
    frames = list(latest_frames(cap, 1000.0))  # type: ignore[arg-type]
    assert 1 <= len(frames) <= 5
    deadline = time.monotonic() + 2
    while cap.releases == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert cap.releases == 1 and not cap.released_during_read
