"""Helpers for the service tests: dataset paths, small synthetic images, polling and a real uvicorn server."""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from PIL import Image
from starlette.types import ASGIApp

ENROLLED = ("ben_afflek", "elton_john", "jerry_seinfeld", "madonna")
UNKNOWN = "mindy_kaling"


def wait_until(cond: Callable[[], bool], timeout: float = 5.0, poll: float = 0.005) -> None:
    """Poll ``cond`` every ``poll`` s until it holds; fail the test after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(poll)


@contextmanager
def serving(app: ASGIApp, port: int) -> Iterator[None]:
    """``app`` served by a real uvicorn on ``127.0.0.1:port`` (lifespan on) in a thread, started on entry (the test
    fails if it is not listening within 20 s) and stopped on exit."""
    import uvicorn

    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    try:
        wait_until(lambda: srv.started or not thread.is_alive(), timeout=20, poll=0.05)
        assert srv.started, "the test server did not start"
        yield
    finally:
        srv.should_exit = True
        thread.join(10)


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
