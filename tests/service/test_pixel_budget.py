"""The decode budget (``FACEREC_DECODE_BUDGET_MP``): requests wait, first come first served, until the pixels
others hold leave room for their photo; a request that holds pixels never waits again (no two requests wait on
each other); outside a request nothing is held; and a real server under concurrent uploads makes them wait and
still answers every one."""

from __future__ import annotations

import io
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from embeddings.images import decode_image
from service.pixel_budget import PixelBudget
from tests.service.conftest import dataset
from tests.service.helpers import images, wait_until
from tests.service.server import Server

__all__ = ["dataset"]


class Request:
    """A thread that, inside the budget's scope, admits each of ``sizes`` in turn, then holds until ``done``."""

    def __init__(self, budget: PixelBudget, *sizes: int) -> None:
        self.admitted = threading.Event()
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(budget, sizes), daemon=True)
        self.thread.start()

    def _run(self, budget: PixelBudget, sizes: tuple[int, ...]) -> None:
        with budget.scope():
            for n in sizes:
                budget.admit(n)
            self.admitted.set()
            self.done.wait(10)

    def finish(self) -> None:
        self.done.set()
        self.thread.join(10)
        assert not self.thread.is_alive()


def test_a_photo_that_does_not_fit_waits_for_the_pixels_given_back() -> None:
    budget = PixelBudget(100)
    first = Request(budget, 80)
    assert first.admitted.wait(5) and budget.held == 80
    second = Request(budget, 50)
    wait_until(lambda: budget.waiting == 1)
    assert not second.admitted.is_set()
    first.finish()
    assert second.admitted.wait(5) and budget.held == 50 and budget.waits == 1
    second.finish()
    assert budget.held == 0 and budget.waiting == 0


def test_first_come_first_served_and_a_large_photo_runs_alone() -> None:
    budget = PixelBudget(100)
    holder = Request(budget, 90)
    assert holder.admitted.wait(5)
    large = Request(budget, 250)  # larger than the whole budget: waits for an empty budget
    wait_until(lambda: budget.waiting == 1)
    small = Request(budget, 5)  # would fit beside the holder, but the large one came first
    wait_until(lambda: budget.waiting == 2)
    assert not small.admitted.is_set()
    holder.finish()
    assert large.admitted.wait(5) and budget.held == 250
    wait_until(lambda: budget.waiting == 1)
    assert not small.admitted.is_set()
    large.finish()
    assert small.admitted.wait(5) and budget.held == 5
    small.finish()
    assert budget.held == 0


def test_a_request_that_holds_pixels_never_waits_again() -> None:
    """Two batch requests that each hold some pixels and want more would otherwise wait on each other for ever."""
    budget = PixelBudget(100)
    a = Request(budget, 60, 60, 60)
    assert a.admitted.wait(5)
    b = Request(budget, 10, 90)  # waits for room for its first photo only
    wait_until(lambda: budget.waiting == 1)
    a.finish()
    assert b.admitted.wait(5) and budget.held == 100
    b.finish()
    assert budget.held == 0


def test_outside_a_request_nothing_is_held_or_waited_for() -> None:
    budget = PixelBudget(10)
    budget.admit(1_000)
    assert budget.held == 0 and budget.waits == 0


def test_a_decode_in_a_scope_asks_the_budget_for_its_pixels() -> None:
    buf = io.BytesIO()
    Image.fromarray(np.zeros((30, 40, 3), np.uint8)).save(buf, format="PNG")
    budget = PixelBudget(10_000)
    seen: list[int] = []
    with budget.scope():
        decode_image(buf.getvalue())
        seen.append(budget.held)
    assert seen == [30 * 40] and budget.held == 0
    decode_image(buf.getvalue())  # outside: the hook is not set
    assert budget.held == 0


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    env = {"FACEREC_DECODE_BUDGET_MP": "1.5", "FACEREC_RATE_LIMIT_PER_MINUTE": "0"}
    yield from Server(tmp_path / "data", env=env).serving()


def _metric(text: str, name: str) -> float:
    return float(next(line.split()[-1] for line in text.splitlines() if line.startswith(name + " ")))


def test_concurrent_uploads_wait_for_the_budget_and_all_answer(server: Server, dataset: Path) -> None:
    """Eight 1-megapixel photos at once against a 1.5-megapixel budget: they take turns, each is answered."""
    photo = Image.open(images(dataset, "val", "madonna")[0]).convert("RGB").resize((1200, 900))
    buf = io.BytesIO()
    photo.save(buf, format="JPEG", quality=90)
    data = buf.getvalue()
    answers: list[int] = []

    def detect() -> None:
        with httpx.Client(base_url=server.url, timeout=120) as client:
            answers.append(client.post("/v1/detect", files={"image": ("p.jpg", data, "image/jpeg")}).status_code)

    threads = [threading.Thread(target=detect) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(180)
    assert answers == [200] * 8
    metrics = httpx.get(f"{server.url}/metrics").text
    assert _metric(metrics, "facerec_decode_waits") >= 1
    assert _metric(metrics, "facerec_decode_pixels_held") == 0
    assert _metric(metrics, "facerec_decode_waiting_requests") == 0
