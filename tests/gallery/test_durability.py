"""Durability: SIGKILL crash safety, snapshot corruption and replay, erasure on disk, the data-dir lock."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from service.gallery import GalleryLocked, LocalGallery
from service.gallery.snapshot import snapshot_path
from service.gallery.sqlite import DB_NAME
from tests.gallery.conftest import MODEL, faces, unit
from tests.gallery.crash_child import SETTINGS

ROOT = Path(__file__).resolve().parents[2]
KILLS = 22


def _check_consistent(g, committed: set[int], deleted: set[int], doubtful: set[int]) -> None:
    """Every acknowledged face is in SQLite and found by the index as its own nearest; nothing extra.

    ``doubtful``: deletions in flight when the child died (either outcome is correct)."""
    in_sql = set(g.store.face_ids(MODEL).tolist())
    in_index = set(g.index_ids(MODEL).tolist())
    assert committed - deleted - doubtful <= in_sql, sorted(committed - deleted - doubtful - in_sql)[:5]
    assert not deleted & in_sql
    assert in_index == in_sql, (sorted(in_index - in_sql)[:5], sorted(in_sql - in_index)[:5])
    doubtful -= in_sql  # resolved: the in-flight delete did commit
    deleted |= doubtful & committed
    doubtful.clear()
    alive = sorted(committed - deleted)
    if alive:
        by_id = {
            f: g.store._reader().execute("SELECT embedding FROM faces WHERE id=?", (f,)).fetchone()[0] for f in alive
        }
        probes = np.stack([np.frombuffer(by_id[f], "<f4") for f in alive])
        res = g.search(probes, model_id=MODEL, top_k=1)
        assert [r[0].face_id for r in res] == alive


@pytest.mark.slow
def test_sigkill_at_random_moments_loses_nothing(tmp_path):
    data = tmp_path / "data"
    rng = np.random.default_rng(99)
    committed: set[int] = set()
    deleted: set[int] = set()
    doubtful: set[int] = set()
    kinds: set[str] = set()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    started = time.monotonic()
    for round_ in range(KILLS):
        child = subprocess.Popen(
            [sys.executable, "-m", "tests.gallery.crash_child", str(data), str(round_)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        lines: list[str] = []
        assert child.stdout is not None
        first = child.stdout.readline()
        assert first.strip() == "ready", first
        reader = threading.Thread(target=lines.extend, args=(child.stdout,))
        reader.start()
        time.sleep(float(rng.uniform(0.05, 0.6)))
        child.send_signal(signal.SIGKILL)
        child.wait()
        reader.join()
        for line in lines:
            op, fid = line.split()
            {"add": committed, "del": deleted, "deleting": doubtful}[op].add(int(fid))
        doubtful -= deleted
        g = LocalGallery(data, replace(SETTINGS, auto_maintain=False))
        try:
            _check_consistent(g, committed, deleted, doubtful)
            kinds.add(g.stats().indexes[MODEL].kind if committed else "empty")
        finally:
            g.close()
    assert len(committed) > 300, len(committed)
    assert "hnsw" in kinds  # the children built HNSW, so kills also hit builds, merges and snapshots
    assert time.monotonic() - started < 90


def _maintained(make_gallery, rng, n: int, hnsw_threshold: int):
    """A gallery with one subject of ``n`` random faces, maintained (its index built): ``(g, subject, records)``."""
    g = make_gallery(hnsw_threshold=hnsw_threshold)
    s = g.create_subject(name="A")
    recs = g.add_faces(s.id, faces(unit(rng, n)))
    g.maintain()
    return g, s, recs


def test_corrupt_snapshot_is_rebuilt(make_gallery, rng, tmp_path):
    g, s, recs = _maintained(make_gallery, rng, 500, hnsw_threshold=300)
    g.close()
    path = snapshot_path(tmp_path / "data", MODEL)
    good = path.read_bytes()
    expected = {r.id for r in recs}
    damages = {
        "truncated": good[: len(good) // 2],
        "garbage": good[:5000] + os.urandom(4000) + good[9000:],
        "header": b"\x00" * 64 + good[64:],
        "empty": b"",
    }
    for kind, damaged in damages.items():
        path.write_bytes(damaged)
        progress: list[tuple[str, int, int]] = []
        g = make_gallery(progress=lambda *a, sink=progress: sink.append(a))
        assert set(g.index_ids(MODEL).tolist()) == expected, kind
        assert progress and progress[-1][1:] == (500, 500), kind
        assert g.search(g.face_embeddings(s.id, model_id=MODEL)[7], model_id=MODEL)[0][0].face_id == recs[7].id
        g.close()
    path.unlink()
    g = make_gallery()
    assert set(g.index_ids(MODEL).tolist()) == expected


def test_stale_snapshot_replays_adds_and_deletes(make_gallery, rng, tmp_path):
    g, s, first = _maintained(make_gallery, rng, 300, hnsw_threshold=200)
    g.save_snapshot()
    later = g.add_faces(s.id, faces(unit(rng, 50)))
    for r in first[:30] + later[:5]:
        g.delete_face(r.id)
    # the files as a crash right now would leave them: SQLite has it all, the snapshot is older
    shutil.copytree(tmp_path / "data", tmp_path / "crashed", ignore=shutil.ignore_patterns("LOCK"))
    progress: list[tuple[str, int, int]] = []
    g = make_gallery(tmp_path / "crashed", progress=lambda *a: progress.append(a))
    assert not progress  # replayed, not rebuilt
    expected = {r.id for r in first[30:] + later[5:]}
    assert set(g.index_ids(MODEL).tolist()) == expected
    hit = g.search(np.stack([g.face_embeddings(s.id, model_id=MODEL)[0]]), model_id=MODEL, top_k=1)[0][0]
    assert hit.face_id == first[30].id
    assert g.stats().indexes[MODEL].kind == "hnsw"


@pytest.mark.parametrize("hnsw", [False, True])
def test_erased_embedding_leaves_no_bytes_on_disk(make_gallery, rng, tmp_path, hnsw):
    data = tmp_path / "data"
    g = make_gallery(hnsw_threshold=100)
    s = g.create_subject(name="A")
    other = g.create_subject(name="B")
    g.add_faces(other.id, faces(unit(rng, 150)))
    secret = unit(rng, 2)
    recs = g.add_faces(s.id, faces(secret))
    if hnsw:
        g.maintain()
    g.save_snapshot()
    blobs = [v.astype("<f4").tobytes() for v in secret]

    def on_disk() -> bytes:
        return b"".join(p.read_bytes() for p in data.rglob("*") if p.is_file() and p.name != "LOCK")

    assert all(b in on_disk() for b in blobs)  # the probe is meaningful
    g.delete_face(recs[0].id)
    assert g.delete_subject(s.id) == 1
    assert not any(c.face_id in {r.id for r in recs} for c in g.search(secret, model_id=MODEL, top_k=5)[0])
    disk = (data / DB_NAME).read_bytes() + (data / f"{DB_NAME}-wal").read_bytes()
    assert not any(b in disk for b in blobs)
    g.save_snapshot()
    assert not any(b in on_disk() for b in blobs)


def test_second_process_gets_gallery_locked(make_gallery, tmp_path):
    g = make_gallery()
    code = (
        "import sys\nfrom service.gallery import open_gallery, GalleryLocked\n"
        "try:\n    open_gallery(sys.argv[1])\n"
        "except GalleryLocked as e:\n    print('locked:', e); sys.exit(3)\n"
        "print('opened')"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}

    def other_process() -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, "-c", code, str(tmp_path / "data")]
        return subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)

    out = other_process()
    assert out.returncode == 3, out.stdout + out.stderr
    assert f"pid {os.getpid()}" in out.stdout
    with pytest.raises(GalleryLocked):
        make_gallery()  # a second open in the same process is refused too
    g.close()
    out = other_process()
    assert out.returncode == 0 and "opened" in out.stdout, out.stdout + out.stderr
