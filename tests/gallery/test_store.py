"""The embedded store (SQLite): schema version and pragmas, page caches, a transaction bigger than the writer's
cache. Backend-independent behaviour (CRUD, pagination, sha256, atomic enrolment) is in tests/gallery/contract."""

from __future__ import annotations

import sqlite3
import threading

import numpy as np
import pytest

from service.gallery import (
    NewFace,
    StorageUnavailable,
)
from service.gallery.crops import decode_crop
from service.gallery.sqlite import READER_CACHE_KIB, SCHEMA_VERSION, WRITER_CACHE_KIB
from tests.gallery.conftest import MODEL, unit


def test_schema_version_recorded(make_gallery):
    g = make_gallery()
    assert g.store.schema_version() == SCHEMA_VERSION
    pragmas = {
        p: g.store._writer.execute(f"PRAGMA {p}").fetchone()[0]
        for p in ("journal_mode", "secure_delete", "foreign_keys", "synchronous")
    }
    assert pragmas == {"journal_mode": "wal", "secure_delete": 1, "foreign_keys": 1, "synchronous": 2}


def test_page_caches_are_bounded(make_gallery):
    """The writer and every per-thread reader get small SQLite page caches (negative cache_size = KiB): enrolment
    writes a PNG crop per face through the writer, and a 64 MiB writer cache filled with them and grew the
    service's RSS by as much under load (docs/LOAD.md)."""
    g = make_gallery()
    assert WRITER_CACHE_KIB <= 8_192 and READER_CACHE_KIB <= 2_048
    assert g.store._writer.execute("PRAGMA cache_size").fetchone()[0] == -WRITER_CACHE_KIB
    seen: list[int] = []
    t = threading.Thread(target=lambda: seen.append(g.store._reader().execute("PRAGMA cache_size").fetchone()[0]))
    t.start()
    t.join()
    assert seen == [-READER_CACHE_KIB]


def test_enrolment_bigger_than_the_writer_cache_is_atomic(make_gallery, rng, monkeypatch):
    """One transaction that writes more than the writer's page cache holds (so SQLite spills dirty pages to the
    WAL before the commit) is still all or nothing, and every crop reads back exactly."""
    g = make_gallery()
    s = g.create_subject(name="A")
    noise = np.random.default_rng(7).integers(0, 256, (160, 160, 3), dtype=np.uint8)  # ~75 KiB as PNG
    n = 2 * WRITER_CACHE_KIB // 75 + 1
    crops = [np.roll(noise, i, axis=1) for i in range(n)]
    new = [NewFace(v, MODEL, crop=c) for v, c in zip(unit(rng, n), crops, strict=True)]

    wal = g.store.path.with_name(g.store.path.name + "-wal")
    wal_at_commit: list[int] = []

    def failing_commit() -> None:  # every row is written when the commit fails
        wal_at_commit.append(wal.stat().st_size)
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(g.store, "_commit", failing_commit)
    with pytest.raises(StorageUnavailable):
        g.add_faces(s.id, new)
    monkeypatch.undo()
    assert wal_at_commit[0] > WRITER_CACHE_KIB * 1024  # the cache spilled to the WAL before the commit
    assert g.stats().faces == 0 and g.store._writer.execute("SELECT count(*) FROM face_crops").fetchone() == (0,)
    records = g.add_faces(s.id, new)
    assert len(records) == n == g.stats().faces
    for r, c in zip(records[:: n // 5], crops[:: n // 5], strict=True):
        assert np.array_equal(decode_crop(g.store.crop_png(r.id) or b""), c)


def test_the_subject_count_follows_every_commit(make_gallery, rng):
    """The count is remembered per reader thread until something is committed (identify asks on every request):
    a subject created, a face added, a subject erased, each seen at once by a thread that counted before."""
    g = make_gallery()
    counts: list[int] = []
    go, done = threading.Event(), threading.Event()

    def reader() -> None:  # one thread, one reader connection, counting after each change below
        for _ in range(4):
            if not go.wait(10):
                return
            go.clear()
            counts.append(g.subject_count())
            done.set()

    t = threading.Thread(target=reader, daemon=True)
    t.start()

    def count_there() -> int:
        done.clear()
        go.set()
        assert done.wait(10)
        return counts[-1]

    assert count_there() == 0
    a = g.create_subject(name="a", metadata={})
    assert count_there() == 1 and g.subject_count() == 1
    g.add_faces(a.id, [NewFace(embedding=unit(rng, 1)[0], model_id=MODEL)])
    assert count_there() == 1
    g.delete_subject(a.id)
    assert count_there() == 0 and g.subject_count() == 0
    t.join(10)
