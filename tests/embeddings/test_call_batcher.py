"""embeddings/call_batcher.py: concurrent network calls are shared, a lone call runs inline, overload is refused;
and with the real OpenVINO MTCNN, concurrent detections share calls and give the sequential results."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import pytest

from embeddings.call_batcher import CallBatcher
from embeddings.errors import Overloaded


class SlowSum:
    """A network stand-in for the batcher's own semantics: row sums, ``delay`` s per call, records each call."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.calls: list[tuple[str, int, str]] = []
        self.gate = threading.Event()
        self.gate.set()

    def __call__(self, name: str, parts: list[np.ndarray]) -> list[list[np.ndarray]]:
        self.gate.wait(10)
        self.calls.append((name, len(parts[0]), threading.current_thread().name))
        time.sleep(self.delay)
        return [[batch.reshape(len(batch), -1).sum(axis=1), batch[:, :1].copy()] for batch in parts]


def test_a_lone_call_runs_inline_in_the_callers_thread() -> None:
    net = SlowSum()
    batcher = CallBatcher(net)
    out = batcher.call("pnet", np.ones((3, 4, 4, 3), np.float32))
    assert out[0].tolist() == [48.0, 48.0, 48.0]
    assert net.calls == [("pnet", 3, threading.current_thread().name)]
    assert (batcher.stats.calls, batcher.stats.jobs) == (1, 1)
    batcher.close()


def test_calls_queued_during_a_call_are_shared_by_network_and_shape() -> None:
    net = SlowSum(delay=0.05)
    batcher = CallBatcher(net)
    rng = np.random.default_rng(0)
    jobs = [("rnet", rng.random((n, 24, 24, 3), dtype=np.float32)) for n in (1, 2, 3, 4)]
    jobs += [("onet", rng.random((2, 48, 48, 3), dtype=np.float32)) for _ in range(3)]
    net.gate.clear()  # the first call blocks until every other caller has queued
    with ThreadPoolExecutor(len(jobs)) as pool:
        futures = [pool.submit(batcher.call, name, batch) for name, batch in jobs]
        deadline = time.monotonic() + 10
        while batcher.queued < len(jobs) - 1 and time.monotonic() < deadline:
            time.sleep(0.005)
        net.gate.set()
        results = [f.result(10) for f in futures]
    for (_, batch), (sums, first) in zip(jobs, results, strict=True):
        np.testing.assert_allclose(sums, batch.reshape(len(batch), -1).sum(axis=1), rtol=1e-6)
        np.testing.assert_array_equal(first, batch[:, :1])
    # one inline call, then at most one call per (network, shape) for everything that queued behind it
    assert batcher.stats.jobs == len(jobs)
    assert batcher.stats.calls <= 3
    assert batcher.stats.samples == sum(len(b) for _, b in jobs)
    batcher.close()


def test_parts_are_shared_part_by_part_and_only_with_the_same_shapes() -> None:
    """Pyramid-like jobs (several batches of different shapes): two jobs of the same shapes share one call, each
    getting its own rows of every part; a job of other shapes runs on its own."""
    net = SlowSum(delay=0.05)
    batcher = CallBatcher(net)
    a = [np.full((1, 8, 8, 3), 1, np.float32), np.full((1, 4, 4, 3), 2, np.float32)]
    b = [np.full((1, 8, 8, 3), 3, np.float32), np.full((1, 4, 4, 3), 4, np.float32)]
    c = [np.full((1, 6, 6, 3), 5, np.float32)]
    net.gate.clear()
    with ThreadPoolExecutor(4) as pool:
        first = pool.submit(batcher.call_parts, "pnet", [np.zeros((1, 2, 2, 3), np.float32)])
        deadline = time.monotonic() + 10
        while not batcher.stats.jobs and not net.calls and time.monotonic() < deadline:
            time.sleep(0.005)
        futures = [pool.submit(batcher.call_parts, "pnet", parts) for parts in (a, b, c)]
        while batcher.queued < 3 and time.monotonic() < deadline:
            time.sleep(0.005)
        net.gate.set()
        first.result(10)
        out_a, out_b, out_c = (f.result(10) for f in futures)
    assert [part[0].tolist() for part in out_a] == [[192.0], [96.0]]
    assert [part[0].tolist() for part in out_b] == [[576.0], [192.0]]
    assert [part[0].tolist() for part in out_c] == [[540.0]]
    assert sorted(n for _, n, _ in net.calls) == [1, 1, 2]  # the first, a + b together, c alone
    with pytest.raises(ValueError):
        batcher.call_parts("pnet", [np.zeros((1, 2), np.float32), np.zeros((2, 2), np.float32)])
    batcher.close()


def test_max_batch_splits_and_errors_reach_only_their_batch() -> None:
    def run(name: str, parts: list[np.ndarray]) -> list[list[np.ndarray]]:
        if np.isnan(parts[0]).any():
            raise ValueError("bad batch")
        time.sleep(0.02)
        return [[parts[0][:, 0]]]

    batcher = CallBatcher(run, max_batch=4)
    with ThreadPoolExecutor(6) as pool:
        ok = [pool.submit(batcher.call, "rnet", np.full((3, 2), i, np.float32)) for i in range(4)]
        bad = pool.submit(batcher.call, "onet", np.full((1, 2), np.nan, np.float32))
        assert [f.result(10)[0].tolist() for f in ok] == [[float(i)] * 3 for i in range(4)]
        with pytest.raises(ValueError, match="bad batch"):
            bad.result(10)
    assert batcher.call("rnet", np.zeros((1, 2), np.float32))[0].tolist() == [0.0]  # the thread lives on
    batcher.close()


def test_overload_is_refused_and_nothing_is_queued() -> None:
    net = SlowSum()
    batcher = CallBatcher(net, max_queue=2)
    net.gate.clear()
    with ThreadPoolExecutor(3) as pool:
        running = pool.submit(batcher.call, "pnet", np.zeros((1, 12, 12, 3), np.float32))
        queued = [pool.submit(batcher.call, "pnet", np.zeros((1, 12, 12, 3), np.float32)) for _ in range(2)]
        deadline = time.monotonic() + 10
        while batcher.queued < 2 and time.monotonic() < deadline:
            time.sleep(0.005)
        with pytest.raises(Overloaded):
            batcher.call("pnet", np.zeros((1, 12, 12, 3), np.float32))
        assert batcher.queued == 2 and batcher.stats.rejected == 1
        net.gate.set()
        for f in (running, *queued):
            f.result(10)
    assert batcher.stats.jobs == 3
    batcher.close()


def test_overloaded_is_a_429_with_retry_after() -> None:
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from service import errors

    app = FastAPI()
    errors.install(app)

    @app.get("/busy")
    def busy() -> None:
        raise Overloaded("256 detector calls are already waiting; retry shortly")

    response = TestClient(app).get("/busy")
    assert response.status_code == 429
    assert response.headers["retry-after"] == "1"
    assert response.json() == {
        "error": {"code": "overloaded", "message": "256 detector calls are already waiting; retry shortly"}
    }


@pytest.fixture(scope="module")
def detector():
    from embeddings.detector import FaceDetector

    return FaceDetector(backend="openvino")


def read_rgb(path: Path) -> np.ndarray:
    bgr = cv2.imread(str(path))
    assert bgr is not None, path
    return np.ascontiguousarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))


@pytest.fixture(scope="module")
def photos(celebrity_root: Path) -> list[np.ndarray]:
    paths = sorted((celebrity_root / "val").rglob("*.jpg"))[:8]
    return [read_rgb(p) for p in paths]


@pytest.mark.slow
def test_concurrent_detections_share_calls_and_match_sequential(detector, photos: list[np.ndarray]) -> None:
    same_size = [cv2.resize(p, (640, 480)) for p in photos]  # equal shapes: PNet levels can be shared too
    expected = [detector.detect(p) for p in same_size]
    stats = detector._compiled.networks.batcher.stats
    before = (stats.calls, stats.jobs)
    with ThreadPoolExecutor(8) as pool:
        found = list(pool.map(detector.detect, same_size * 2))
    assert found == expected * 2
    calls, jobs = stats.calls - before[0], stats.jobs - before[1]
    assert jobs > calls  # some network calls served several detections


@pytest.mark.slow
def test_a_lone_detection_is_not_slowed_by_the_batcher(detector, photos: list[np.ndarray]) -> None:
    """Every network call of a lone detection runs in the caller's thread, with the same result as the networks
    called directly: no hand-off, so no wait (the timing comparison is bench/detect.py's, not a unit test's)."""
    from embeddings.mtcnn_algorithm import Cascade

    networks = detector._compiled.networks
    image = np.asarray(cv2.resize(photos[0], (640, 480)), np.uint8)

    class Direct:
        def call(self, name: str, batch: np.ndarray) -> list[np.ndarray]:
            return networks._infer(name, [batch])[0]

        def call_parts(self, name: str, parts: list[np.ndarray]) -> list[list[np.ndarray]]:
            return networks._infer(name, parts)

    direct_networks = object.__new__(type(networks))
    direct_networks.__dict__.update(networks.__dict__)
    direct_networks.batcher = Direct()
    direct = Cascade(direct_networks)
    batched = detector._compiled

    threads: list[str] = []
    run = networks.batcher._run

    def recording(name: str, parts: list[np.ndarray]) -> list[list[np.ndarray]]:
        threads.append(threading.current_thread().name)
        return run(name, parts)

    networks.batcher._run = recording
    try:
        np.testing.assert_array_equal(direct.detect(image), batched.detect(image))
    finally:
        networks.batcher._run = run
    assert len(threads) >= 3 and set(threads) == {threading.current_thread().name}
