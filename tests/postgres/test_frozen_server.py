"""A PostgreSQL server that stops answering without closing its sockets (its processes frozen: a paused VM, a
network cut that drops packets) must not hang requests: a pooled connection that does not answer the pool's check
within ``FACEREC_DB_TIMEOUT_S`` is dropped and the call fails with StorageUnavailable (503); once the server
answers again, calls succeed without a restart."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from service.devdb import DevCluster
from service.gallery import StorageUnavailable
from service.gallery.postgres.connection import PoolOptions
from service.pgstores import open_postgres


def _server_pids(cluster: DevCluster) -> list[int]:
    """The postmaster and its children (backends, background workers)."""
    master = int((cluster.pgdata / "postmaster.pid").read_text().split()[0])
    children = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == master:
                children.append(int(entry))
    return [master, *children]


def _outcome(call: Callable[[], object]) -> object:
    """What ``call`` returned, or the exception it raised."""
    try:
        return call()
    except Exception as e:
        return e


@contextmanager
def frozen(cluster: DevCluster) -> Iterator[None]:
    """Every server process stopped (SIGSTOP) for the block: sockets stay open, nothing answers."""
    pids = _server_pids(cluster)
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGCONT)


def test_a_frozen_server_is_a_503_within_the_timeout_not_a_hang(own_cluster: DevCluster) -> None:
    backend = open_postgres(
        own_cluster.url(), pool=PoolOptions(min_size=1, max_size=2, timeout_s=1.0, connect_timeout_s=2)
    )
    try:
        gallery = backend.gallery
        sid = gallery.create_subject(name="a").id
        outcome: list[object] = []
        with frozen(own_cluster):
            t0 = time.monotonic()
            call = threading.Thread(target=lambda: outcome.append(_outcome(lambda: gallery.get_subject(sid))))
            call.start()
            call.join(timeout=15)
            took = time.monotonic() - t0
            assert not call.is_alive(), "the call hung on the frozen server"
        call.join()
        assert outcome and isinstance(outcome[0], StorageUnavailable), outcome
        assert took < 5, took
        deadline = time.monotonic() + 15
        while isinstance(_outcome(lambda: gallery.get_subject(sid)), Exception):
            assert time.monotonic() < deadline, "no service after the server answered again"
            time.sleep(0.2)
        assert gallery.get_subject(sid).name == "a"
    finally:
        backend.close()
