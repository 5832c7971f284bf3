"""The cross-request micro-batcher (service/batching.py): queueing logic with a recording fake encoder, then
the real server sharing FaceNet calls between concurrent requests with unchanged embeddings."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import numpy.typing as npt
import pytest

from service.batching import BatchingEncoder, MicroBatcher
from service.bootstrap import make_runner
from service.config import Settings
from service.errors import NotReady, Overloaded
from tests.service.helpers import images, wait_until
from tests.service.server import Server

BAD = 255  # a crop filled with this value makes the fake encoder fail


class FakeEncoder:
    """Row i = [crop i's fill value] * 4; records each call's size; optionally blocks until ``gate`` is set."""

    def __init__(self, gate: threading.Event | None = None) -> None:
        self.calls: list[int] = []
        self.threads: list[int] = []
        self.gate = gate
        self.entered = threading.Event()

    def __call__(self, crops: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
        self.calls.append(len(crops))
        self.threads.append(threading.get_ident())
        self.entered.set()
        if self.gate is not None:
            assert self.gate.wait(10)
        if (crops == BAD).any():
            raise ValueError("bad crop")
        return np.repeat(crops[:, :1, 0, 0].astype(np.float32), 4, axis=1)


def crops(*values: int) -> npt.NDArray[np.uint8]:
    out = np.zeros((len(values), 4, 4, 3), dtype=np.uint8)
    for i, v in enumerate(values):
        out[i] = v
    return out


def encode_one_timed(batcher: MicroBatcher) -> float:
    """Seconds one marked request waits to encode one crop."""
    with batcher.producer():
        start = time.perf_counter()
        batcher.encode(crops(1))
        return time.perf_counter() - start


def run_producers(batcher: MicroBatcher, jobs: list[npt.NDArray[np.uint8]]) -> list[Any]:
    """One thread per job: enter ``producer()``, wait until all have entered, then encode. Results or errors."""
    barrier = threading.Barrier(len(jobs))

    def work(job: npt.NDArray[np.uint8]) -> Any:
        with batcher.producer():
            barrier.wait(5)
            try:
                return batcher.encode(job)
            except Exception as exc:
                return exc

    with ThreadPoolExecutor(len(jobs)) as pool:
        return list(pool.map(work, jobs))


def test_concurrent_requests_share_one_call_and_get_their_own_rows() -> None:
    enc = FakeEncoder()
    batcher = MicroBatcher(enc, max_batch=32, max_wait_ms=5000)
    try:
        jobs = [crops(i) if i % 2 else crops(i, i + 100) for i in range(1, 9)]
        results = run_producers(batcher, jobs)
    finally:
        batcher.close()
    assert enc.calls == [sum(len(j) for j in jobs)]  # everyone was on the way: one call, no 5 s wait
    for job, res in zip(jobs, results, strict=True):
        assert isinstance(res, np.ndarray) and res.shape == (len(job), 4)
        assert res[:, 0].tolist() == job[:, 0, 0, 0].astype(float).tolist()


def test_max_batch_bounds_each_call() -> None:
    enc = FakeEncoder()
    batcher = MicroBatcher(enc, max_batch=4, max_wait_ms=5000)
    try:
        results = run_producers(batcher, [crops(i) for i in range(1, 11)])
    finally:
        batcher.close()
    assert sum(enc.calls) == 10 and max(enc.calls) == 4 and all(c <= 4 for c in enc.calls)
    assert sorted(int(r[0, 0]) for r in results) == list(range(1, 11))


def test_lone_request_does_not_wait() -> None:
    enc = FakeEncoder()
    batcher = MicroBatcher(enc, max_batch=32, max_wait_ms=5000)
    try:
        start = time.perf_counter()
        with batcher.producer():
            out = batcher.encode(crops(7))
        unmarked = batcher.encode(crops(8))  # a caller outside producer(): nobody to wait for either
        elapsed = time.perf_counter() - start
    finally:
        batcher.close()
    assert out[0, 0] == 7 and unmarked[0, 0] == 8 and elapsed < 1.0
    assert enc.threads == [threading.get_ident()] * 2  # alone: encoded inline, no hand-over to the thread


def test_waits_at_most_max_wait_for_a_request_still_on_its_way() -> None:
    enc = FakeEncoder()
    batcher = MicroBatcher(enc, max_batch=32, max_wait_ms=150)
    on_the_way = threading.Event()
    done = threading.Event()

    def straggler() -> None:  # in the pipeline (e.g. still detecting) but never reaches the encoder
        with batcher.producer():
            on_the_way.set()
            done.wait(10)

    t = threading.Thread(target=straggler)
    t.start()
    try:
        assert on_the_way.wait(5)
        elapsed = encode_one_timed(batcher)
    finally:
        done.set()
        t.join()
        batcher.close()
    assert 0.14 <= elapsed < 1.0


def test_straggler_leaving_releases_the_batch() -> None:
    enc = FakeEncoder()
    batcher = MicroBatcher(enc, max_batch=32, max_wait_ms=5000)
    leave = threading.Event()
    inside = threading.Event()

    def straggler() -> None:
        with batcher.producer():
            inside.set()
            leave.wait(10)

    t = threading.Thread(target=straggler)
    t.start()
    assert inside.wait(5)
    threading.Timer(0.1, leave.set).start()
    try:
        elapsed = encode_one_timed(batcher)
    finally:
        t.join()
        batcher.close()
    assert 0.05 <= elapsed < 2.0  # released when the straggler left (no face), not after 5 s


def test_full_queue_is_overloaded_and_enqueues_nothing() -> None:
    gate = threading.Event()
    enc = FakeEncoder(gate)
    batcher = MicroBatcher(enc, max_batch=1, max_wait_ms=0, max_queue=3)
    pool = ThreadPoolExecutor(4)
    try:
        first = pool.submit(batcher.encode, crops(1))
        assert enc.entered.wait(5)  # the encoder is busy with the first face
        queued = [pool.submit(batcher.encode, crops(v)) for v in (2, 3, 4)]
        wait_until(lambda: batcher.queued_faces == 3)
        with pytest.raises(Overloaded) as info:
            batcher.encode(crops(5))
        assert info.value.headers == {"Retry-After": "1"}
        assert batcher.queued_faces == 3
        gate.set()
        assert first.result(5)[0, 0] == 1
        assert [int(f.result(5)[0, 0]) for f in queued] == [2, 3, 4]
        assert sum(enc.calls) == 4  # the refused face never reached the encoder
    finally:
        gate.set()
        pool.shutdown()
        batcher.close()


def test_an_empty_queue_takes_a_request_larger_than_the_bound() -> None:
    enc = FakeEncoder()
    batcher = MicroBatcher(enc, max_batch=2, max_wait_ms=0, max_queue=2)
    try:
        out = batcher.encode(crops(1, 2, 3, 4, 5))
    finally:
        batcher.close()
    assert out[:, 0].tolist() == [1, 2, 3, 4, 5] and enc.calls == [5]


def test_encoder_error_reaches_only_that_batch() -> None:
    enc = FakeEncoder()
    batcher = MicroBatcher(enc, max_batch=32, max_wait_ms=5000)
    try:
        first = run_producers(batcher, [crops(1), crops(BAD), crops(3)])
        second = run_producers(batcher, [crops(4), crops(5)])
    finally:
        batcher.close()
    assert enc.calls == [3, 2]
    assert all(isinstance(r, ValueError) for r in first)
    assert [float(r[0, 0]) for r in second] == [4.0, 5.0]


Gated = tuple[threading.Event, FakeEncoder, MicroBatcher, ThreadPoolExecutor]


@pytest.fixture
def gated() -> Iterator[Gated]:
    """A one-face-per-batch batcher whose encoder blocks until ``gate`` is set, and a pool of 3 callers."""
    gate = threading.Event()
    enc = FakeEncoder(gate)
    batcher = MicroBatcher(enc, max_batch=1, max_wait_ms=0)
    pool = ThreadPoolExecutor(3)
    try:
        yield gate, enc, batcher, pool
    finally:
        gate.set()
        pool.shutdown()


def test_close_drains_queued_work_then_refuses(gated: Gated) -> None:
    gate, enc, batcher, pool = gated
    futures = [pool.submit(batcher.encode, crops(v)) for v in (1, 2, 3)]
    wait_until(lambda: enc.entered.is_set() and batcher.queued_faces == 2)
    threading.Timer(0.1, gate.set).start()
    batcher.close(timeout=5)
    assert [int(f.result(5)[0, 0]) for f in futures] == [1, 2, 3]
    assert not batcher._thread.is_alive()
    with pytest.raises(NotReady):
        batcher.encode(crops(4))


def test_close_fails_what_a_stuck_encoder_left_waiting(gated: Gated) -> None:
    gate, enc, batcher, pool = gated
    busy = pool.submit(batcher.encode, crops(1))
    waiting = pool.submit(batcher.encode, crops(2))
    wait_until(lambda: enc.entered.is_set() and batcher.queued_faces == 1)
    start = time.perf_counter()
    batcher.close(timeout=0.2)
    assert time.perf_counter() - start < 2.0
    with pytest.raises(NotReady, match="shut down"):
        waiting.result(5)
    gate.set()
    assert busy.result(5)[0, 0] == 1


class PlainEncoder:
    """An encoder with the analyzer's interface, around :class:`FakeEncoder`."""

    precision = "bf16"

    def __init__(self) -> None:
        self.fake = FakeEncoder()
        self.flip_tta = False
        self.warmed = False

    def encode(self, crops: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
        return self.fake(crops)

    def warm_up(self) -> None:
        self.warmed = True


def test_batching_encoder_has_the_encoders_interface_and_goes_through_the_batcher() -> None:
    inner = PlainEncoder()
    batcher = MicroBatcher(inner.encode, max_batch=8, max_wait_ms=0)
    try:
        wrapped = BatchingEncoder(inner, batcher)
        np.testing.assert_array_equal(wrapped.encode(crops(3, 5))[:, 0], [3, 5])
        assert inner.fake.calls == [2] and wrapped.precision == "bf16"
        wrapped.flip_tta = True
        wrapped.warm_up()
        assert inner.flip_tta and inner.warmed
        assert batcher.queued_faces == 0
    finally:
        batcher.close()


def test_runner_limits_are_set_when_built() -> None:
    settings = Settings(inference_threads=3, batch_max_size=8, max_pending=5)
    plain = make_runner(settings, None)
    assert plain.limiter.total_tokens == 3 and plain.max_pending == 5 and plain.tracker is None
    batcher = MicroBatcher(FakeEncoder(), max_batch=8)
    try:
        batched = make_runner(settings, batcher)
        assert batched.limiter.total_tokens == 3 + 8 and batched.tracker == batcher.producer
    finally:
        batcher.close()


# ---- the real server ------------------------------------------------------------------------------------


def metric(text: str, name: str) -> float:
    m = re.search(rf"^{name} ([0-9.e+]+)$", text, re.M)
    assert m, f"{name} missing from /metrics"
    return float(m.group(1))


@pytest.mark.slow
def test_real_server_shares_encoder_calls_with_unchanged_embeddings(
    tmp_path: Path, dataset: Path, analyzer: Any
) -> None:
    photos = [p.read_bytes() for person in ("ben_afflek", "madonna") for p in images(dataset, "val", person)[:3]]
    # a long max wait: requests still detecting are waited for, so concurrent ones surely share calls
    env = {"FACEREC_BATCH_MAX_WAIT_MS": "2000", "FACEREC_INFERENCE_THREADS": "2"}
    srv = Server(tmp_path / "data", env=env).start()
    try:
        with httpx.Client(base_url=srv.url, timeout=120.0) as client:

            def embed(photo: bytes) -> list[list[float]]:
                r = client.post("/v1/embed", files={"image": photo})
                assert r.status_code == 200, r.text
                return [f["embedding"] for f in r.json()["faces"]]

            with ThreadPoolExecutor(len(photos)) as pool:
                served = list(pool.map(embed, photos))
            text = client.get("/metrics").text
    finally:
        srv.stop()
    calls = metric(text, "facerec_encoder_batch_faces_count")
    faces = metric(text, "facerec_encoder_batch_faces_sum")
    assert faces == sum(len(s) for s in served) >= len(photos)
    assert calls < faces  # at least one encoder call carried faces of several requests
    assert metric(text, "facerec_encoder_batch_requests_sum") == len(photos)
    for photo, got in zip(photos, served, strict=True):
        want = np.stack([f.embedding for f in analyzer.analyze(photo)])
        np.testing.assert_allclose(np.asarray(got, dtype=np.float32), want, atol=1e-5)
