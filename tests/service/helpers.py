"""Helpers for the service tests: dataset paths and small synthetic images."""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from pathlib import Path

from PIL import Image

ENROLLED = ("ben_afflek", "elton_john", "jerry_seinfeld", "madonna")
UNKNOWN = "mindy_kaling"


def wait_until(cond: Callable[[], bool], timeout: float = 5.0, poll: float = 0.005) -> None:
    """Poll ``cond`` every ``poll`` s until it holds; fail the test after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(poll)


def images(dataset: Path, split: str, person: str) -> list[Path]:
    return sorted((dataset / split / person).glob("*.jpg"))


def png(width: int, height: int, color: tuple[int, int, int] = (128, 128, 128)) -> bytes:
    """A plain image with no face."""
    buf = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buf, format="PNG")
    return buf.getvalue()


def side_by_side(a: Path, b: Path) -> bytes:
    """Two photos pasted next to each other (two faces in one JPEG)."""
    ia, ib = Image.open(a).convert("RGB"), Image.open(b).convert("RGB")
    h = max(ia.height, ib.height)
    canvas = Image.new("RGB", (ia.width + ib.width, h), (255, 255, 255))
    canvas.paste(ia, (0, 0))
    canvas.paste(ib, (ia.width, 0))
    buf = io.BytesIO()
    canvas.save(buf, format="JPEG", quality=95)
    return buf.getvalue()
