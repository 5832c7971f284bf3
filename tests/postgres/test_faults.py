"""PostgreSQL going away under load (``pg_ctl -m immediate``, like a crash) and coming back: calls fail with
StorageUnavailable (HTTP 503) while it is down, never anything else; service resumes by itself within 5 s of the
server being back, with the same backend objects; no acknowledged write is lost."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import numpy as np
import pytest

from service.devdb import DevCluster
from service.gallery import StorageUnavailable
from service.gallery.postgres.connection import PoolOptions
from service.pgstores import PostgresBackend, open_postgres
from tests.gallery.conftest import MODEL, faces, unit
from tests.pgfixtures import new_cluster


@pytest.fixture
def own_cluster() -> Iterator[DevCluster]:
    """A cluster of this test's own (it is stopped and restarted)."""
    cluster = new_cluster()
    yield cluster
    cluster.destroy()


def test_immediate_stop_and_restart_under_load(own_cluster: DevCluster) -> None:
    backend: PostgresBackend = open_postgres(
        own_cluster.url(), pool=PoolOptions(min_size=2, max_size=4, timeout_s=1.0, connect_timeout_s=2)
    )
    g = backend.gallery
    subject = g.create_subject(name="load")
    rng = np.random.default_rng(7)
    acked: list[int] = []
    unexpected: list[BaseException] = []
    log: list[tuple[float, bool]] = []  # (time, ok) of every write
    stop = threading.Event()

    def writer(seed: int) -> None:
        r = np.random.default_rng(seed)
        while not stop.is_set():
            try:
                recs = g.add_faces(subject.id, faces(unit(r, 1)))
                acked.append(recs[0].id)
                log.append((time.monotonic(), True))
            except StorageUnavailable:
                log.append((time.monotonic(), False))
                time.sleep(0.05)
            except BaseException as e:  # anything else would be a 500
                unexpected.append(e)
                return

    def reader() -> None:
        probe = unit(rng, 1)
        while not stop.is_set():
            try:
                g.search(probe, model_id=MODEL, top_k=3)
                backend.keys.has_active()
            except StorageUnavailable:
                time.sleep(0.05)
            except BaseException as e:
                unexpected.append(e)
                return

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(3)] + [threading.Thread(target=reader)]
    for t in threads:
        t.start()
    try:
        time.sleep(1.5)
        before = len(acked)
        own_cluster.stop("immediate")
        down_at = time.monotonic()
        time.sleep(2.0)
        own_cluster.start()
        back_at = time.monotonic()
        deadline = back_at + 10
        while time.monotonic() < deadline and not any(ok and t > back_at for t, ok in log):
            time.sleep(0.05)
        time.sleep(1.0)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)
    try:
        assert unexpected == []
        assert before > 0
        failures_while_down = [t for t, ok in log if not ok and down_at <= t <= back_at]
        assert failures_while_down, "writes while PostgreSQL was down must fail (503), not hang or succeed"
        first_ok_after = min(t for t, ok in log if ok and t > back_at)
        assert first_ok_after - back_at <= 5.0
        assert not [t for t, ok in log if not ok and t > first_ok_after + 1.0]  # and it stays up
        stored = {r.id for r in g.list_faces(subject.id)}
        assert set(acked) <= stored  # every acknowledged face survived the crash
        assert g.face_count(MODEL) == len(stored)
    finally:
        backend.close()
