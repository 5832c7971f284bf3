"""Search with a large outbox backlog: faces committed to PostgreSQL but not yet in Milvus (after a re-index switch,
or the first start of a Milvus replica on a gallery served by pgvector until then). Every search also compares the
faces pending in the outbox (read-your-writes), so their cost falls on every search until the backlog drains.

    python bench/milvus_backlog.py --indexed 10000 --pending 40000 --out reports/milvus-backlog.json

A local PostgreSQL 18 + pgvector (service/devdb.py) and Milvus 2.3.5 standalone server (service/devmilvus.py),
started by the script. ``--indexed`` synthetic faces (bench/gallery.py's ``Synthetic``, N/10 identities) COPYed
into PostgreSQL and drained into Milvus, then ``--pending`` more COPYed and left in the outbox (no sync thread);
Milvus's collection flushed and indexed (HNSW) before each phase, as a served one is; then on one thread
``MilvusGallery.search(probe, top_k=5)``: the first search (it loads the replica's copy of the
pending faces), p50/p99 with the backlog, recall@1 against exact brute force over every face (indexed and pending),
the search while another connection drains the backlog in batches of 2,000 (the pending set changes under every
search; Milvus also waits for its next time tick there, as after any write), and the same with an empty outbox.
``*_parts``: the time inside the pending faces' own steps (the first round trip with the copy's refresh, and
the comparison with the probe), where the gallery has them (``MilvusGallery.pending_faces``); older code reports
totals only.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.gallery import PER_ID, Synthetic
from bench.milvus_gallery import MODEL, SERVER_SETTINGS, _timed, _wait_indexed, _write
from service.devdb import DevCluster
from service.devmilvus import running_server
from service.gallery.milvus import MilvusGallery, MilvusOptions, open_milvus, outbox
from service.gallery.postgres import PoolOptions, PostgresDatabase


def _copy(db: PostgresDatabase, syn: Synthetic, lo: int, hi: int) -> None:
    """COPY faces ``lo <= f < hi`` of ``syn`` (face id ``f + 1``, subject pk ``f // PER_ID + 1``); the subjects of
    every identity when ``lo == 0``. The outbox triggers queue each face."""
    now = time.time()
    with db.pool.connection() as conn, conn.transaction():
        if lo == 0:
            with conn.cursor().copy("COPY subjects (pk, id, name, metadata, created_at, updated_at) FROM STDIN") as c:
                for i in range(syn.ids):
                    c.write_row((i + 1, uuid.uuid4().hex, f"id{i}", "{}", now, now))
            conn.execute("SELECT setval(pg_get_serial_sequence('subjects', 'pk'), %s)", (syn.ids,))
        cols = "COPY faces (id, subject_pk, model_id, embedding, created_at) FROM STDIN (FORMAT BINARY)"
        with conn.cursor().copy(cols) as cp:
            cp.set_types(["bigint", "bigint", "text", "vector", "double precision"])
            for start, x in syn.chunks():
                for k in range(max(lo - start, 0), min(hi - start, len(x))):
                    f = start + k
                    cp.write_row((f + 1, f // PER_ID + 1, MODEL, x[k], now))
        conn.execute("SELECT setval(pg_get_serial_sequence('faces', 'id'), %s)", (hi,))
    with db.pool.connection() as conn:
        conn.execute("VACUUM ANALYZE faces")


def _clocked(fn: Callable[..., Any], into: list[float]) -> Callable[..., Any]:
    """``fn`` that appends each call's time (ms) to ``into``."""

    def timed(*a: Any, **kw: Any) -> Any:
        t = time.perf_counter()
        try:
            return fn(*a, **kw)
        finally:
            into.append((time.perf_counter() - t) * 1e3)

    return timed


class Parts:
    """Milliseconds spent in the pending faces' steps (refresh + state, comparison), per search."""

    def __init__(self, g: MilvusGallery) -> None:
        self.state: list[float] = []
        self.nearest: list[float] = []
        self.on = hasattr(g, "pending_faces")
        if not self.on:
            return
        from service.gallery.milvus.pending import PendingView

        faces, view = g.pending_faces, PendingView
        state, nearest = faces.state, view.nearest

        faces.state = _clocked(state, self.state)  # type: ignore[method-assign]
        view.nearest = _clocked(nearest, self.nearest)  # type: ignore[method-assign]

    def take(self) -> dict[str, Any]:
        """p50 of each step since the last take."""
        out = {}
        for name, xs in (("state_and_refresh", self.state), ("compare_pending", self.nearest)):
            if xs:
                out[name + "_p50_ms"] = round(float(np.percentile(xs, 50)), 3)
                out[name + "_max_ms"] = round(max(xs), 3)
            xs.clear()
        return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    n = args.indexed + args.pending
    syn = Synthetic(n)
    probes = syn.probes(args.probes)
    exact = syn.exact_nearest(probes) + 1  # face ids start at 1
    out: dict[str, Any] = {
        "indexed": args.indexed,
        "pending": args.pending,
        "probes": args.probes,
        "cache_max": args.cache_max,
    }
    cluster = DevCluster(Path(tempfile.mkdtemp(prefix="facerec-milvus-backlog-pg-")), settings=SERVER_SETTINGS)
    cluster.start()
    try:
        url = cluster.create_database("bench", owner="facerec")
        with running_server() as server:
            db = open_milvus(url, MilvusOptions(uri=server.uri, timeout_s=120), pool=PoolOptions(), sync_interval_s=0)
            try:
                g = db.gallery
                assert isinstance(g, MilvusGallery)
                if args.cache_max is not None:
                    from service.gallery.milvus.pending import PendingFaces

                    g.pending_faces = PendingFaces(cap=args.cache_max)
                _copy(db, syn, 0, args.indexed)
                g.drain()
                _wait_indexed(g.engine, MODEL, args.indexed)  # flushed and indexed, as a served collection is
                _copy(db, syn, args.indexed, n)
                out["pending_rows"] = g.pending()

                def search(p: Any) -> None:
                    g.search(p, model_id=MODEL, top_k=5)

                parts = Parts(g)
                t = time.perf_counter()
                search(probes[:1])
                out["first_search_ms"] = round((time.perf_counter() - t) * 1e3, 1)
                out["first_search_parts"] = parts.take()

                def measure(stage: str) -> None:
                    """recall@1 of the probes, then their timed searches and the time of their parts."""
                    got = [row[0].face_id for row in g.search(probes, model_id=MODEL, top_k=1)]
                    out[f"recall_at_1_{stage}"] = float(np.mean(np.array(got) == exact))
                    parts.take()
                    out[f"search_{stage}"] = _timed(search, probes)
                    out[f"search_{stage}_parts"] = parts.take()

                measure("with_backlog")
                print(json.dumps(out), flush=True)
                out["search_while_draining"] = _while_draining(db, g, search, probes)
                out["search_while_draining_parts"] = parts.take()
                g.drain()
                _wait_indexed(g.engine, MODEL, n)
                out["pending_rows_after"] = g.pending()
                measure("drained")
            finally:
                db.close()
    finally:
        cluster.destroy()
    return out


def _while_draining(db: PostgresDatabase, g: MilvusGallery, search: Any, probes: Any) -> dict[str, Any]:
    """Searches (one thread) while another drains the outbox in batches of 2,000 rows (what the sync thread
    does): p50/p99 and how many searches ran before the backlog was gone."""
    done = threading.Event()

    def drain() -> None:
        try:
            with db.pool.connection() as conn:
                while outbox.drain_once(conn, g.engine, limit=2000).rows:
                    pass
        finally:
            done.set()

    t = threading.Thread(target=drain, name="bench-drain")
    t.start()
    times: list[float] = []
    i = 0
    while not done.is_set():
        s = time.perf_counter()
        search(probes[i % len(probes)][None])
        times.append(time.perf_counter() - s)
        i += 1
    t.join()
    ms = np.array(times or [0.0]) * 1e3
    return {
        "searches": len(times),
        "p50_ms": round(float(np.percentile(ms, 50)), 2),
        "p99_ms": round(float(np.percentile(ms, 99)), 2),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--indexed", type=int, default=10_000, help="faces drained into Milvus first")
    p.add_argument("--pending", type=int, default=40_000, help="faces then left pending in the outbox")
    p.add_argument("--probes", type=int, default=200)
    p.add_argument(
        "--cache-max", type=int, help="pending faces a replica keeps in memory at most (above: compared in PostgreSQL)"
    )
    p.add_argument("--out", default="reports/milvus-backlog.json")
    args = p.parse_args()
    out = run(args)
    _write(args.out, out)


if __name__ == "__main__":
    main()
