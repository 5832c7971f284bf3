"""Storage faults at the gallery level: a full disk and a read-only database refuse writes with
``StorageFull`` / ``StorageUnavailable``, leave SQLite and the index untouched, and reads keep working.

What is simulated and how: a full disk is SQLite's own ``SQLITE_FULL``, produced by ``PRAGMA max_page_count``
on the gallery's writer connection (the database cannot grow past its current size, as on a full disk; the
OS-level ``ENOSPC`` on the WAL file is the same error code inside SQLite). A read-only data dir is the writer
connection swapped for one opened ``mode=ro`` (what SQLite falls back to when it cannot open the file for
writing: ``SQLITE_READONLY``); tests run as root, where ``chmod`` would not stop writes. A failing device is an
injected ``disk I/O error`` at commit; a full or read-only disk for snapshots is an injected ``OSError``.
"""

from __future__ import annotations

import errno
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from service.gallery import LocalGallery, StorageFull, StorageUnavailable, snapshot
from service.gallery.sqlite import storage_error
from tests.gallery.conftest import MODEL, faces, unit

NO_LIMIT = 1073741823


def _consistent(g: LocalGallery) -> list[int]:
    in_sql = g.store.face_ids(MODEL).tolist()
    assert g.index_ids(MODEL).tolist() == in_sql
    return in_sql


def _fill(g: LocalGallery) -> None:
    """Make the database unable to grow: SQLite answers ``SQLITE_FULL`` as it would on a full disk."""
    w = g.store._writer
    pages = w.execute("PRAGMA page_count").fetchone()[0]
    w.execute(f"PRAGMA max_page_count={pages}")


def test_storage_error_classification(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "x.db", isolation_level=None)
    conn.execute("CREATE TABLE t (b BLOB)")
    conn.execute(f"PRAGMA max_page_count={conn.execute('PRAGMA page_count').fetchone()[0]}")
    with pytest.raises(sqlite3.OperationalError) as full:
        conn.executemany("INSERT INTO t VALUES (?)", [(b"x" * 4000,)] * 10)
    conn.close()
    ro = sqlite3.connect(f"file:{tmp_path / 'x.db'}?mode=ro", uri=True, isolation_level=None)
    with pytest.raises(sqlite3.OperationalError) as readonly:
        ro.execute("INSERT INTO t VALUES (1)")
    ro.close()
    assert isinstance(storage_error(full.value), StorageFull)
    assert isinstance(storage_error(readonly.value), StorageUnavailable)
    assert isinstance(storage_error(sqlite3.OperationalError("disk I/O error")), StorageUnavailable)
    assert isinstance(storage_error(OSError(errno.ENOSPC, "No space left on device")), StorageFull)
    assert isinstance(storage_error(OSError(errno.EDQUOT, "Disk quota exceeded")), StorageFull)
    assert isinstance(storage_error(OSError(errno.EROFS, "Read-only file system")), StorageUnavailable)
    assert isinstance(storage_error(OSError(errno.EIO, "Input/output error")), StorageUnavailable)
    assert storage_error(sqlite3.IntegrityError("UNIQUE constraint failed")) is None
    assert storage_error(OSError(errno.ENOENT, "missing")) is None
    assert storage_error(ValueError("x")) is None
    assert StorageFull.code == "insufficient_storage" and StorageUnavailable.code == "storage_unavailable"


def test_disk_full_refuses_writes_and_corrupts_nothing(make_gallery, rng, tmp_path) -> None:
    g = make_gallery()
    a, b = g.create_subject(name="a"), g.create_subject(name="b")
    acked = [r.id for r in g.add_faces(a.id, faces(unit(rng, 20)))]
    acked += [r.id for r in g.add_faces(b.id, faces(unit(rng, 5)))]
    _fill(g)
    refused = 0
    for _ in range(40):  # single faces fit in the last page's free space until it is full
        try:
            acked += [r.id for r in g.add_faces(a.id, faces(unit(rng, 1)))]
        except StorageFull:
            refused += 1
            break
    assert refused, "the database never filled up"
    with pytest.raises(StorageFull):
        g.add_faces_many({a.id: faces(unit(rng, 30)), b.id: faces(unit(rng, 30))})
    with pytest.raises(StorageFull):
        g.create_subjects([(f"s{i}", {"pad": "x" * 200}) for i in range(200)])
    assert _consistent(g) == sorted(acked)  # nothing half-written, index untouched by the failed writes
    # reads keep working
    probe = g.store._reader().execute("SELECT embedding FROM faces WHERE id=?", (acked[0],)).fetchone()[0]
    hit = g.search(np.frombuffer(probe, "<f4")[None, :], model_id=MODEL, top_k=1)[0][0]
    assert hit.face_id == acked[0] and hit.subject_id == a.id
    assert len(g.list_faces(a.id)) + len(g.list_faces(b.id)) == len(acked)
    assert [s.id for s in g.list_subjects(limit=10)[0]] == [a.id, b.id]
    # an erasure either happens completely or not at all
    try:
        g.delete_face(acked[-1])
        acked.pop()
    except StorageFull:
        pass
    assert _consistent(g) == sorted(acked)
    # lift the fault: writes work again, the file is intact
    g.store._writer.execute(f"PRAGMA max_page_count={NO_LIMIT}")
    acked += [r.id for r in g.add_faces(b.id, faces(unit(rng, 3)))]
    g.close()
    g2 = make_gallery()
    assert g2.store._reader().execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    assert _consistent(g2) == sorted(acked)


def test_readonly_database_refuses_writes(make_gallery, rng) -> None:
    g = make_gallery()
    a = g.create_subject(name="a")
    acked = [r.id for r in g.add_faces(a.id, faces(unit(rng, 6)))]
    writer = g.store._writer
    ro = sqlite3.connect(f"file:{g.store.path}?mode=ro", uri=True, isolation_level=None, check_same_thread=False)
    g.store._writer = ro
    try:
        with pytest.raises(StorageUnavailable):
            g.add_faces(a.id, faces(unit(rng, 2)))
        with pytest.raises(StorageUnavailable):
            g.create_subject(name="b")
        with pytest.raises(StorageUnavailable):
            g.update_subject(a.id, name="renamed")
        with pytest.raises(StorageUnavailable):
            g.delete_face(acked[0])
        with pytest.raises(StorageUnavailable):
            g.delete_subject(a.id)
        assert _consistent(g) == acked
        assert g.get_subject(a.id).name == "a" and g.get_subject(a.id).face_count == 6
        assert g.search(unit(rng, 1), model_id=MODEL, top_k=1)[0][0].subject_id == a.id
    finally:
        g.store._writer = writer
        ro.close()
    acked += [r.id for r in g.add_faces(a.id, faces(unit(rng, 1)))]
    assert _consistent(g) == acked


def test_io_error_at_commit_rolls_back(make_gallery, rng, monkeypatch) -> None:
    g = make_gallery()
    a = g.create_subject(name="a")
    acked = [r.id for r in g.add_faces(a.id, faces(unit(rng, 3)))]

    def failing_commit() -> None:
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(g.store, "_commit", failing_commit)
    with pytest.raises(StorageUnavailable):
        g.add_faces(a.id, faces(unit(rng, 4)))
    assert not g.store._writer.in_transaction
    monkeypatch.undo()
    assert _consistent(g) == acked
    acked += [r.id for r in g.add_faces(a.id, faces(unit(rng, 1)))]
    assert _consistent(g) == acked


@pytest.mark.parametrize("err", [errno.ENOSPC, errno.EROFS])
def test_snapshot_write_failure_is_survived(make_gallery, rng, tmp_path, monkeypatch, err) -> None:
    g = make_gallery()
    a = g.create_subject(name="a")
    acked = [r.id for r in g.add_faces(a.id, faces(unit(rng, 10)))]
    g.save_snapshot()
    path = snapshot.snapshot_path(tmp_path / "data", MODEL)
    before = path.read_bytes()
    acked += [r.id for r in g.add_faces(a.id, faces(unit(rng, 5)))]
    real_open = open

    def no_space(file, mode="r", *args, **kwargs):
        if "w" in mode and ".tmp-" in str(file):
            raise OSError(err, "injected")
        return real_open(file, mode, *args, **kwargs)

    monkeypatch.setattr("builtins.open", no_space)
    g.maintain(force_snapshot=True)  # logged, not raised: the snapshot is only a cache
    g.close()  # likewise
    monkeypatch.undo()
    assert path.read_bytes() == before  # the previous snapshot is intact, no temp file left
    assert not list(path.parent.glob("*.tmp-*"))
    g2 = make_gallery()
    assert _consistent(g2) == acked  # older snapshot + replay from SQLite
