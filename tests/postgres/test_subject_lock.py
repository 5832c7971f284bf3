"""The per-subject enrolment lock across replicas (``Gallery.subject_writes``) waits at most the pool's timeout: a
replica frozen (or cut off) in the middle of an enrolment keeps its session, and so the lock, alive; without a
bound every other replica's enrolment into that subject waited for ever, and with it (the enrolments of a process
take turns) every enrolment of that replica, whatever the subject."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import psycopg

from service.gallery import StorageUnavailable
from service.gallery.postgres import locks
from service.gallery.postgres.connection import PoolOptions
from service.pgstores import PostgresBackend


def test_a_subject_lock_held_elsewhere_is_a_503_after_the_timeout(
    open_replica: Callable[..., PostgresBackend], pg_url: str
) -> None:
    a = open_replica(pool=PoolOptions(min_size=1, max_size=4, timeout_s=1.0))
    sid = a.gallery.create_subject(name="x").id
    other = a.gallery.create_subject(name="y").id
    with psycopg.connect(pg_url, autocommit=True) as stuck:  # a replica frozen while it held the lock
        stuck.execute("SELECT pg_advisory_lock(%s, hashtext(%s))", (locks.SUBJECT_WRITES, sid))
        outcome: list[BaseException | None] = []

        def enrol_turn() -> None:
            try:
                with a.gallery.subject_writes(sid):
                    outcome.append(None)
            except BaseException as e:
                outcome.append(e)

        t0 = time.monotonic()
        waiter = threading.Thread(target=enrol_turn)
        waiter.start()
        waiter.join(timeout=10)
        assert not waiter.is_alive(), "the lock wait has no bound"
        assert isinstance(outcome[0], StorageUnavailable) and 0.9 < time.monotonic() - t0 < 5, outcome
        assert "held by another" in str(outcome[0])
        with a.gallery.subject_writes(other):  # another subject is not held up
            pass
    with a.gallery.subject_writes(sid):  # the holder gone: the lock is taken at once
        pass


def test_the_subject_lock_still_serialises_writers(open_replica: Callable[..., PostgresBackend]) -> None:
    a, b = open_replica(), open_replica()
    sid = a.gallery.create_subject(name="x").id
    inside: list[int] = []
    overlap = threading.Event()

    def turn(backend: PostgresBackend) -> None:
        with backend.gallery.subject_writes(sid):
            inside.append(1)
            if len(inside) > 1:
                overlap.set()
            time.sleep(0.3)
            inside.pop()

    threads = [threading.Thread(target=turn, args=(r,)) for r in (a, b, a, b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not overlap.is_set()
