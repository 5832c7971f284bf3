"""PostgreSQL + Milvus gallery benchmarks, on a local PostgreSQL 18 + pgvector (service/devdb.py) and a local Milvus
2.3.5 standalone server (service/devmilvus.py), both started by the script itself.

    python bench/milvus_gallery.py search --size 100000 --out reports/milvus-search.json
    python bench/milvus_gallery.py indexes --size 100000 \
        --out reports/milvus-indexes.json

``search``: N synthetic clustered unit vectors (bench/gallery.py's ``Synthetic``, as bench/pg_gallery.py: N/10
identities) COPYed into PostgreSQL (the outbox triggers queue every face), then the outbox drained into Milvus
(timed: the bulk-load rate into Milvus through the service's own write path), the segments flushed and the HNSW
index built (timed); then ``MilvusGallery.search(probe, top_k=5)`` on one thread (the service's code path: counts
and write timestamp from PostgreSQL, Milvus search at that guarantee timestamp, candidates checked and re-ranked
against PostgreSQL, subject grouping): p50/p99 and recall@1 against exact brute force; the same at the engine level
with Milvus's Strong, Bounded and the gallery's guarantee-timestamp consistency (what read-your-writes costs); and
enrolment through ``add_faces`` (one face per call: PostgreSQL transaction + outbox + drain to Milvus).

``indexes``: for each index type, the same N vectors upserted straight into a collection, the index built
(timed), Milvus's resident memory before/after loading, and engine-level search p50 / recall@1.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.faceshape import fit_shape
from bench.gallery import PER_ID, Synthetic
from service.devdb import DevCluster
from service.devmilvus import MilvusServer, running_server
from service.gallery import NewFace
from service.gallery.milvus import MilvusEngine, MilvusGallery, MilvusOptions, open_milvus, outbox
from service.gallery.milvus.gallery import _CANDIDATES
from service.gallery.milvus.indexes import INDEX_PARAMS
from service.gallery.milvus.reconcile import rebuild
from service.gallery.postgres import PoolOptions, PostgresDatabase

MODEL = "bench-model"
SERVER_SETTINGS = ("shared_buffers=1GB", "maintenance_work_mem=1GB")
DRAIN_BATCH = 20_000
"""Outbox rows per drain transaction (one Milvus upsert request per model, ~10 MiB at 128-d)."""


def _rss_mib(server: MilvusServer) -> float:
    """Resident memory of the Milvus process tree, MiB."""
    assert server.proc is not None
    total = 0
    for pid in [server.proc.pid, *_children(server.proc.pid)]:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


def _children(pid: int) -> list[int]:
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        kids = (task / "children").read_text().split()
        for k in kids:
            out += [int(k), *_children(int(k))]
    return out


def _wait_indexed(engine: MilvusEngine, model: str, n: int, timeout_s: float = 2400) -> float:
    """Flush the collection and wait until its index covers ``n`` rows; seconds taken. :class:`TimeoutError`
    when it does not within ``timeout_s`` (Milvus retries a failing build for ever, e.g. DISKANN on a build
    without it)."""
    client = engine._connect()
    name = engine.name(model)
    t = time.perf_counter()
    client.flush(name)
    deadline = time.monotonic() + timeout_s
    while True:
        info = client.describe_index(name, "embedding")
        if int(info.get("indexed_rows", 0)) >= n and int(info.get("pending_index_rows", 0)) == 0:
            break
        if time.monotonic() > deadline:
            raise TimeoutError(f"{info.get('indexed_rows', 0)} of {n} rows indexed after {timeout_s:.0f} s")
        time.sleep(1)
    client.release_collection(name)
    client.load_collection(name)
    return time.perf_counter() - t


def _segments(engine: MilvusEngine, model: str) -> dict[str, Any]:
    """The query node's sealed segments of the collection: count, partitions, rows of each."""
    infos = engine._connect().list_loaded_segments(engine.name(model), timeout=60)
    rows = sorted((int(s.num_rows) for s in infos), reverse=True)
    return {"count": len(rows), "partitions": len({s.partition_id for s in infos}), "rows": rows}


def _load_pg(db: PostgresDatabase, syn: Synthetic) -> None:
    import uuid

    now = time.time()
    with db.pool.connection() as conn, conn.transaction():
        with conn.cursor().copy("COPY subjects (pk, id, name, metadata, created_at, updated_at) FROM STDIN") as cp:
            for i in range(syn.ids):
                cp.write_row((i + 1, uuid.uuid4().hex, f"id{i}", "{}", now, now))
        for start, x in syn.chunks():
            cols = "COPY faces (id, subject_pk, model_id, embedding, created_at) FROM STDIN (FORMAT BINARY)"
            with conn.cursor().copy(cols) as cp:  # binary: the vectors go as float32, not as text
                cp.set_types(["bigint", "bigint", "text", "vector", "double precision"])
                for k, v in enumerate(x):
                    f = start + k
                    cp.write_row((f + 1, f // PER_ID + 1, MODEL, v, now))
        conn.execute("SELECT setval(pg_get_serial_sequence('faces', 'id'), %s)", (syn.n,))
        conn.execute("SELECT setval(pg_get_serial_sequence('subjects', 'pk'), %s)", (syn.ids,))
    with db.pool.connection() as conn:
        conn.execute("VACUUM ANALYZE faces")


def _timed(fn: Any, probes: npt.NDArray[np.float32]) -> dict[str, float]:
    for p in probes[:20]:
        fn(p[None])
    times = []
    for p in probes:
        t = time.perf_counter()
        fn(p[None])
        times.append(time.perf_counter() - t)
    ms = np.array(times) * 1e3
    return {"p50_ms": round(float(np.percentile(ms, 50)), 2), "p99_ms": round(float(np.percentile(ms, 99)), 2)}


def _bulk_load(db: PostgresDatabase, g: MilvusGallery, syn: Synthetic, server: MilvusServer) -> dict[str, Any]:
    """COPY into PostgreSQL, drain the outbox into Milvus, flush and build: timings and memory."""
    out: dict[str, Any] = {"milvus_rss_mib_empty": round(_rss_mib(server))}
    t = time.perf_counter()
    _load_pg(db, syn)
    out["pg_copy_faces_per_s"] = round(syn.n / (time.perf_counter() - t))
    t = time.perf_counter()
    with db.pool.connection() as conn:
        outbox.drain(conn, g.engine, limit=DRAIN_BATCH)
    out["drain_to_milvus_faces_per_s"] = round(syn.n / (time.perf_counter() - t))
    out["index_build_s"] = round(_wait_indexed(g.engine, MODEL, syn.n), 1)
    out["segments"] = _segments(g.engine, MODEL)
    out["milvus_rss_mib_loaded"] = round(_rss_mib(server))
    with db.pool.connection() as conn:
        row = conn.execute("SELECT pg_total_relation_size('faces')").fetchone()
    out["pg_faces_table_mib"] = round(int(row[0]) / 2**20) if row else None
    print(json.dumps(out), flush=True)
    return out


def _queries(db: PostgresDatabase, g: MilvusGallery, syn: Synthetic, args: argparse.Namespace) -> dict[str, Any]:
    """Search through the gallery (p50/p99, recall@1), engine-level consistency levels, enrolment."""
    probes = syn.probes(args.probes)
    exact = syn.exact_nearest(probes) + 1  # face ids start at 1
    out: dict[str, Any] = {}
    got = [row[0].face_id for row in g.search(probes, model_id=MODEL, top_k=1)]
    out["gallery_recall_at_1"] = float(np.mean(np.array(got) == exact))
    out["gallery_search"] = _timed(lambda p: g.search(p, model_id=MODEL, top_k=5), probes)
    with db.pool.connection() as conn:
        ts = outbox.write_ts(conn, MODEL)
    eng = g.engine
    name = eng.name(MODEL)
    client = eng._connect()
    levels: dict[str, Any] = {
        "guarantee_ts": lambda p: eng.search(MODEL, p, 40, guarantee_ts=ts),
        "bounded": lambda p: eng.search(MODEL, p, 40),
        "strong": lambda p: client.search(name, data=[p[0].tolist()], limit=40, consistency_level="Strong"),
    }
    out["engine_search_k40"] = {k: _timed(fn, probes[: args.probes // 4]) for k, fn in levels.items()}
    ids = [fid for fid, _ in eng.search(MODEL, probes[:1], 40, guarantee_ts=ts)[0]]

    def state(_p: Any) -> None:
        with db.pool.connection() as conn:
            g.pending_faces.state(conn, MODEL)  # counts, write timestamp, pending faces (none here)

    def candidates(_p: Any) -> None:
        with db.pool.connection() as conn:
            conn.cursor(binary=True).execute(_CANDIDATES, {"m": MODEL, "ids": ids}).fetchall()

    out["search_parts"] = {  # the gallery's steps one at a time (a pooled connection each)
        "pg_counts_and_write_ts": _timed(state, probes[:100]),
        "milvus_k40_guarantee_ts": out["engine_search_k40"]["guarantee_ts"],
        "pg_candidates_40": _timed(candidates, probes[:100]),
    }
    out["gallery_search_again"] = _timed(lambda p: g.search(p, model_id=MODEL, top_k=5), probes)  # settled
    chosen = eng.options
    for ef in args.ef_sweep:  # the same collection searched with other FACEREC_MILVUS_EF values
        eng.options = dataclasses.replace(chosen, ef=ef)
        got = [row[0].face_id for row in g.search(probes, model_id=MODEL, top_k=1)]
        out.setdefault("ef_sweep", {})[str(ef)] = {
            "recall_at_1": float(np.mean(np.array(got) == exact)),
            **_timed(lambda p: g.search(p, model_id=MODEL, top_k=5), probes),
        }
    eng.options = chosen
    sid = g.create_subject(name="enrol")
    new = syn.probes(args.enrol)
    t = time.perf_counter()
    for v in new:
        g.add_faces(sid.id, [NewFace(embedding=v, model_id=MODEL)])
    out["enrol_one_face_per_call_faces_per_s"] = round(args.enrol / (time.perf_counter() - t), 1)
    rt = []
    for v in syn.probes(20) * -1:  # fresh vectors: enrol then search at once (read-your-writes)
        f = g.add_faces(sid.id, [NewFace(embedding=v / np.linalg.norm(v), model_id=MODEL)])[0]
        t = time.perf_counter()
        hit = g.search(v[None], model_id=MODEL, top_k=1)[0][0]
        rt.append(time.perf_counter() - t)
        assert hit.face_id == f.id
    out["search_right_after_enrol_p50_ms"] = round(float(np.median(rt)) * 1e3, 2)
    return out


def search(args: argparse.Namespace) -> None:
    syn = Synthetic(args.size, shape=fit_shape(args.shape) if args.shape else None)
    result: dict[str, Any] = {
        "size": args.size,
        "probes": args.probes,
        "generator": syn.generator,
        "index": "HNSW M=16 efConstruction=200",
        "ef": args.ef,
        "milvus_config": args.milvus_config,
    }
    cluster = DevCluster(Path(tempfile.mkdtemp(prefix="facerec-milvus-bench-pg-")), settings=SERVER_SETTINGS)
    cluster.start()
    try:
        url = cluster.create_database("bench", owner="facerec")
        with running_server(tuple(args.milvus_config)) as server:
            db = open_milvus(
                url, MilvusOptions(uri=server.uri, timeout_s=120, ef=args.ef), pool=PoolOptions(), sync_interval_s=0
            )
            try:
                g = db.gallery
                assert isinstance(g, MilvusGallery)
                result["load"] = _bulk_load(db, g, syn, server)
                try:
                    result.update(_queries(db, g, syn, args))
                except Exception as e:  # keep the load figures; the error goes into the report
                    result["error"] = f"{type(e).__name__}: {e}"
                    _write(args.out, result)
                    raise
                if args.rebuild:
                    t = time.perf_counter()
                    rebuild(g)
                    result["rebuild_index_faces_per_s"] = round(args.size / (time.perf_counter() - t))
            finally:
                db.close()
    finally:
        cluster.destroy()
    _write(args.out, result)


def indexes(args: argparse.Namespace) -> None:
    syn = Synthetic(args.size, shape=fit_shape(args.shape) if args.shape else None)
    probes = syn.probes(args.probes)
    exact = syn.exact_nearest(probes)
    out: dict[str, Any] = {"size": args.size, "probes": args.probes, "generator": syn.generator, "types": {}}
    with running_server(("queryNode.enableDisk=true",)) as server:
        for kind in args.types:
            eng = MilvusEngine(MilvusOptions(uri=server.uri, index_type=kind, timeout_s=120, ef=64), f"idx{kind}")
            rss0 = _rss_mib(server)
            try:
                t = time.perf_counter()
                for start, x in syn.chunks():
                    for s in range(0, len(x), 10_000):
                        eng.upsert(MODEL, list(range(start + s, start + s + len(x[s : s + 10_000]))), x[s : s + 10_000])
                load_s = time.perf_counter() - t
                build_s = _wait_indexed(eng, MODEL, args.size, timeout_s=args.build_timeout)
                rss1 = _rss_mib(server)
                got = [h[0][0][0] if h and h[0] else -1 for h in (eng.search(MODEL, p[None], 1) for p in probes)]
                rec = float(np.mean(np.array(got) == exact))
                lat = _timed(lambda p, e=eng: e.search(MODEL, p, 5), probes)
                out["types"][kind] = {
                    "params": INDEX_PARAMS.get(kind, {}),
                    "upsert_faces_per_s": round(args.size / load_s),
                    "build_s": round(build_s, 1),
                    "rss_delta_mib": round(rss1 - rss0),
                    "recall_at_1": rec,
                    **lat,
                }
            except Exception as e:
                out["types"][kind] = {"error": f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"}
            finally:
                try:
                    eng.drop(MODEL)
                finally:
                    eng.close()
            print(kind, json.dumps(out["types"][kind]), flush=True)
    _write(args.out, out)


def _write(path: str, data: dict[str, Any]) -> None:
    data["machine"] = {"cpus": os.cpu_count(), "note": "2-core VM shared with other jobs, no GPU"}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(data, indent=2))
    print(json.dumps(data, indent=2))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("search")
    s.add_argument("--size", type=int, default=100_000)
    s.add_argument("--probes", type=int, default=400)
    s.add_argument("--enrol", type=int, default=200)
    s.add_argument("--out", default="reports/milvus-search.json")
    s.add_argument("--rebuild", action="store_true", help="also time rebuild-index (drop, refill from PostgreSQL)")
    s.add_argument("--ef", type=int, default=MilvusOptions(uri="").ef, help="search breadth (FACEREC_MILVUS_EF)")
    s.add_argument("--ef-sweep", type=lambda v: [int(x) for x in v.split(",")], default=[], help="also these ef")
    s.add_argument("--milvus-config", nargs="*", default=[], help="extra milvus.yaml key=value settings")
    i = sub.add_parser("indexes")
    i.add_argument("--size", type=int, default=100_000)
    i.add_argument("--probes", type=int, default=300)
    i.add_argument("--types", nargs="+", default=["HNSW", "HNSW_SQ", "IVF_SQ8", "DISKANN"])
    i.add_argument("--build-timeout", type=float, default=600, help="seconds an index type may take to build")
    i.add_argument("--out", default="reports/milvus-indexes.json")
    for sp in (s, i):
        sp.add_argument("--shape", type=Path, help="draw faces with the covariance of these embeddings (faceshape.py)")
    args = p.parse_args()
    {"search": search, "indexes": indexes}[args.cmd](args)


if __name__ == "__main__":
    main()
