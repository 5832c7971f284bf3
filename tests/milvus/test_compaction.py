"""Erasure removes the vectors from the real Milvus server's segments, not only from its search results: a
replica's compaction thread flushes and compacts the collection after an erasure (``compact_delay_s`` later), and
the segment files Milvus serves no longer hold the erased embedding. Milvus down or refusing: the erasure is still
acknowledged and the compaction is retried."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import numpy.typing as npt

from service.devmilvus import _free_port
from service.gallery.milvus import MilvusGallery, MilvusOptions, open_milvus
from service.gallery.postgres.connection import PoolOptions
from tests.milvus.conftest import OpenReplica
from tests.milvus.helpers import MODEL, faces, own_client, unit
from tests.milvusfixtures import MilvusServer


def _segments(server: MilvusServer, g: MilvusGallery) -> dict[int, int]:
    """The collection's persistent segments: id -> rows (deleted rows count until a compaction)."""
    with own_client(server) as client:
        return {int(s.segment_id): int(s.num_rows) for s in client.list_persistent_segments(g.engine.name(MODEL))}


def _holding(server: MilvusServer, g: MilvusGallery, v: npt.NDArray[np.float32]) -> list[Path]:
    """The insert binlogs of the collection's current segments that hold the bytes of ``v``."""
    needle = np.ascontiguousarray(v, np.float32).tobytes()
    found = []
    for seg in _segments(server, g):
        for f in (server.data / "data" / "insert_log").glob(f"*/*/{seg}/*/*"):
            if needle in f.read_bytes():
                found.append(f)
    return found


def _erasures(g: MilvusGallery) -> tuple[object, ...] | None:
    with g._conn() as conn:
        return conn.execute(
            "SELECT first_erased, retry_at FROM vector_compaction WHERE model_id = %s", (MODEL,)
        ).fetchone()


def test_an_erased_face_leaves_the_segment_files(
    open_server_replica: OpenReplica, milvus_server: MilvusServer, rng: np.random.Generator
) -> None:
    g = open_server_replica(sync_interval_s=0.5, compact_delay_s=0.0).gallery
    assert isinstance(g, MilvusGallery)
    kept = g.create_subject(name="kept")
    g.add_faces(kept.id, faces(unit(rng, 20)))
    v = unit(rng, 1)
    gone = g.create_subject(name="erased")
    g.add_faces(gone.id, faces(v))
    with own_client(milvus_server) as client:
        client.flush(g.engine.name(MODEL))  # sealed: the vector is in a segment file on the server's disk
    assert _holding(milvus_server, g, v[0]), "the enrolled vector is not in any segment file"
    assert sum(_segments(milvus_server, g).values()) == 21

    t0 = time.monotonic()
    g.delete_subject(gone.id)
    while _holding(milvus_server, g, v[0]) and time.monotonic() - t0 < 120:
        time.sleep(1)
    took = time.monotonic() - t0
    assert not _holding(milvus_server, g, v[0]), "the erased vector is still in a segment Milvus serves"
    assert sum(_segments(milvus_server, g).values()) == 20, _segments(milvus_server, g)
    deadline = time.monotonic() + 30
    while (_erasures(g) or (None,))[0] is not None and time.monotonic() < deadline:
        time.sleep(0.5)  # the compaction thread clears the erasure once it sees the job completed
    assert (_erasures(g) or (None,))[0] is None
    got = g.search(v, model_id=MODEL, top_k=5)[0]
    assert [c.subject_id for c in got] == [kept.id]
    print(f"erasure -> erased vector out of the served segments: {took:.1f} s")


def test_compaction_waits_for_the_delay_and_retries_while_milvus_is_down(
    open_server_replica: OpenReplica, pg_url: str, rng: np.random.Generator
) -> None:
    a = open_server_replica(compact_delay_s=3600.0).gallery
    assert isinstance(a, MilvusGallery)
    s = a.create_subject(name="someone")
    a.add_faces(s.id, faces(unit(rng, 3)))
    assert a.delete_subject(s.id) == 3
    assert _erasures(a) is not None and a.compactor.run_once() is None  # not due before the delay

    down = open_milvus(  # a replica whose Milvus is down (nothing listens on its port)
        pg_url,
        MilvusOptions(uri=f"http://127.0.0.1:{_free_port(8709)}", timeout_s=1.0, compact_delay_s=0.0),
        pool=PoolOptions(min_size=1, max_size=2),
        sync_interval_s=0.0,
    )
    try:
        g = down.gallery
        assert isinstance(g, MilvusGallery)
        assert g.compactor.run_once() == "failed"  # no exception: logged, retried later
        first, retry_at = _erasures(a) or (None, 0.0)
        assert first is not None and float(retry_at) > time.time() + 30  # type: ignore[arg-type]
        assert g.compactor.run_once() is None  # nor hammered: the retry waits
    finally:
        down.close()

    a.compactor.delay_s = 0.0
    with a._conn() as conn:
        conn.execute("UPDATE vector_compaction SET retry_at = 0")  # the retry time has come
    steps = [a.compactor.run_once()]
    deadline = time.monotonic() + 120
    while steps[-1] in ("requested", "running") and time.monotonic() < deadline:
        time.sleep(0.5)
        steps.append(a.compactor.run_once())
    assert steps[0] == "requested" and steps[-1] == "completed", steps
    assert (_erasures(a) or (None,))[0] is None
    assert a.compactor.run_once() is None  # nothing due any more
