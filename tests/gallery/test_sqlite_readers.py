"""A gallery's per-thread SQLite readers are closed when their threads end: worker pools retire idle threads and
start new ones for as long as the server runs, and a reader kept per thread ever seen leaked two file descriptors
(the database and its WAL) and its page cache each."""

from __future__ import annotations

import os
import threading
from pathlib import Path

from service.gallery.sqlite.connections import Connections


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def read_in_a_thread(conns: Connections) -> None:
    thread = threading.Thread(target=lambda: conns._reader().execute("SELECT 1").fetchall())
    thread.start()
    thread.join(10)


def test_readers_of_ended_threads_are_closed(tmp_path: Path) -> None:
    conns = Connections(tmp_path)
    try:
        read_in_a_thread(conns)
        before = open_fds()
        for _ in range(100):
            read_in_a_thread(conns)
        assert len(conns._all) <= 2  # the writer (and at most one reader): one more per thread before
        assert open_fds() <= before
        assert conns._reader().execute("SELECT 1").fetchone() == (1,)  # a live thread keeps its reader
        assert conns._reader() is conns._reader()
    finally:
        conns.close()
