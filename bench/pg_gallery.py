"""PostgreSQL + pgvector gallery benchmarks, on a local PostgreSQL 18 + pgvector started by the script itself
(service/devdb.py; nothing else to install).

    python bench/pg_gallery.py search --sizes 100000 --out reports/pg-search.json
    python bench/pg_gallery.py enrol --faces 2000 --out reports/pg-enrol.json
    python bench/pg_gallery.py parity --npz reports/lfw_embeddings.npz \
        --out reports/pg-parity.json

``search``, per size N: synthetic clustered unit vectors (bench/gallery.py's ``Synthetic``: N/10 identities, same-
identity distances ~0.8, different ~1.4, like FaceNet on LFW) bulk-loaded with COPY, the per-model HNSW index
built (timed), then ``PostgresGallery.search(probe, top_k=5)`` on one thread: p50/p99 latency (pool checkout,
counts, pgvector query and subject grouping: the whole call) and recall@1 of the face returned against exact
brute force in numpy, for a sweep of ``hnsw.ef_search``.

``enrol``: ``add_faces(subject, [face])`` one face per call (one transaction, like one API enrolment) into the
embedded gallery (SQLite + FAISS) and into PostgreSQL, from 1 and from 8 threads, with the aligned crop stored
(as the service does); faces/s of each, and on one thread where PostgreSQL's time per enrolment goes (crop
encoding, pool checkout, a bare durable commit).

``parity``: real LFW embeddings (bench/lfw_embeddings.py's npz): one held-out probe image of each person with at
least two images (up to ``--probes``), every other image enrolled (up to ``--gallery`` faces) in both backends
with their defaults (the embedded gallery searches exactly below 50,000 faces, PostgreSQL through HNSW above
5,000); per probe, the top-1 subject and the match/unknown decision at the model's threshold are compared, and
every difference is listed with both distances.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.faceshape import fit_shape
from bench.gallery import MODEL, PER_ID, Synthetic, search_latency, size_header
from service.devdb import DevCluster
from service.gallery import NewFace, open_gallery
from service.gallery.crops import encode_crop
from service.gallery.postgres import PoolOptions, PostgresDatabase, VectorOptions, open_database
from service.gallery.postgres import vectors as pgvec
from service.gallery.postgres.vectors import HnswBuild

DEFAULTS = VectorOptions()
SERVER_SETTINGS = ("shared_buffers=1GB", "maintenance_work_mem=1GB", "max_parallel_maintenance_workers=1")
"""Server settings (``-c``) of the script's PostgreSQL; ``--set name=value`` adds or overrides one (e.g. a larger
``maintenance_work_mem`` so that a 1M-face HNSW graph is built in memory)."""


def _settings(overrides: list[str]) -> tuple[str, ...]:
    merged = {s.split("=", 1)[0]: s for s in SERVER_SETTINGS}
    merged.update({s.split("=", 1)[0]: s for s in overrides})
    return tuple(merged.values())


def _cluster(overrides: list[str] | None = None) -> DevCluster:
    root = Path(tempfile.mkdtemp(prefix="facerec-pg-bench-"))
    cluster = DevCluster(root, settings=_settings(overrides or []))
    cluster.start()
    return cluster


def _load(backend: PostgresDatabase, syn: Synthetic) -> list[str]:
    """Subjects and faces of ``syn`` with COPY (face ``f`` gets id ``f + 1``); returns the subject ids."""
    import uuid

    sids = [uuid.uuid4().hex for _ in range(syn.ids)]
    now = time.time()
    with backend.pool.connection() as conn, conn.transaction():
        with conn.cursor().copy("COPY subjects (pk, id, name, metadata, created_at, updated_at) FROM STDIN") as cp:
            for i, sid in enumerate(sids):
                cp.write_row((i + 1, sid, f"id{i}", "{}", now, now))
        for start, x in syn.chunks():
            with conn.cursor().copy("COPY faces (id, subject_pk, model_id, embedding, created_at) FROM STDIN") as cp:
                for k, v in enumerate(x):
                    f = start + k
                    cp.write_row((f + 1, f // PER_ID + 1, MODEL, v, now))
            print(f"  [{time.strftime('%H:%M:%S')}] loaded {start + len(x):,}", flush=True)
        conn.execute("SELECT setval(pg_get_serial_sequence('faces', 'id'), %s)", (syn.n,))
        conn.execute("SELECT setval(pg_get_serial_sequence('subjects', 'pk'), %s)", (syn.ids,))
    with backend.pool.connection() as conn:
        conn.execute("VACUUM ANALYZE faces")
        conn.execute("VACUUM ANALYZE subjects")
    return sids


def _recall(g: Any, probes: npt.NDArray[np.float32], exact_faces: npt.NDArray[np.int64]) -> float:
    got = np.array([row[0].face_id for row in g.search(probes, model_id=MODEL, top_k=1)])
    return float(np.mean(got == exact_faces))


def _has_database(cluster: DevCluster, name: str) -> bool:
    with cluster.admin() as c:
        return c.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is not None


def search(args: argparse.Namespace) -> None:
    if args.cluster:  # kept: a later run with the same --cluster queries the loaded, indexed databases again
        cluster = DevCluster(Path(args.cluster), settings=_settings(args.set))
        cluster.start()
    else:
        cluster = _cluster(args.set)
    shape = fit_shape(args.shape) if args.shape else None
    results: dict[str, Any] = {
        "command": " ".join(["python", *sys.argv]),
        "cpu_count": os.cpu_count(),
        "server_settings": list(_settings(args.set)),
        "sizes": [],
    }
    try:
        for n in args.sizes:
            print(f"== {n:,} faces ==", flush=True)
            name = f"bench_{n}" if shape is None else f"bench_{n}_shaped"
            reuse = bool(args.cluster) and _has_database(cluster, name)
            url = cluster.url(name) if reuse else cluster.create_database(name)
            build = HnswBuild(m=args.m, ef_construction=args.ef_construction)
            opts = VectorOptions(build=build, exact_below=args.exact_below)
            backend = open_database(url, pool=PoolOptions(min_size=1, max_size=2), vectors=opts)
            syn = Synthetic(n, args.seed, shape)
            out = size_header(syn, args)
            if not reuse:
                t = time.perf_counter()
                _load(backend, syn)
                out["copy_load_s"] = time.perf_counter() - t
            probes = syn.probes(args.probes)
            exact = syn.exact_nearest(probes) + 1
            if not reuse:
                t = time.perf_counter()
                with backend.pool.connection() as conn:
                    pgvec.ensure_index(conn, MODEL, opts)
                out["hnsw_build_s"] = time.perf_counter() - t
                print(f"  HNSW build: {out['hnsw_build_s']:.1f} s", flush=True)
            with backend.pool.connection() as conn:
                size = conn.execute(
                    "SELECT pg_relation_size(%s), pg_relation_size('faces')", (pgvec.index_name(MODEL),)
                ).fetchone()
            out["hnsw_index_mb"], out["faces_table_mb"] = (int(v) / 2**20 for v in size) if size else (None, None)
            if args.prewarm:  # table and index into shared_buffers first: latency without cold reads
                with cluster.admin(f"bench_{n}") as c:
                    c.execute("CREATE EXTENSION IF NOT EXISTS pg_prewarm")
                    c.execute("SELECT pg_prewarm('faces'), pg_prewarm(%s)", (pgvec.index_name(MODEL),))
                out["prewarmed"] = True
            sweep: dict[str, Any] = {}
            for ef in args.ef_sweep:
                g = open_database(url, pool=PoolOptions(min_size=1, max_size=2), vectors=VectorOptions(
                    ef_search=ef, exact_below=args.exact_below, build=build
                )).gallery  # fmt: skip
                lat = search_latency(g, probes[: args.latency_probes])
                lat["recall_at_1"] = _recall(g, probes, exact)
                sweep[str(ef)] = lat
                print(f"  ef_search={ef}: {lat}", flush=True)
                g.close()
            out["ef_sweep"] = sweep
            if args.exact_probes:
                exact_g = open_database(url, vectors=VectorOptions(exact_below=2**62)).gallery
                out["exact_scan"] = search_latency(exact_g, probes[: min(args.exact_probes, args.latency_probes)])
                k = args.exact_probes
                out["exact_scan"]["recall_at_1"] = _recall(exact_g, probes[:k], exact[:k])
                print(f"  exact scan: {out['exact_scan']}", flush=True)
                exact_g.close()
            backend.close()
            if not args.cluster:
                cluster.drop_database(f"bench_{n}")
            results["sizes"].append(out)
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.out).write_text(json.dumps(results, indent=2))
    finally:
        if args.cluster:
            cluster.stop()
        else:
            cluster.destroy()


def _enrol_rate(add: Any, subjects: list[str], faces: list[NewFace], threads: int) -> float:
    per = len(faces) // threads
    errors: list[BaseException] = []

    def work(k: int) -> None:
        try:
            for i in range(k * per, (k + 1) * per):
                add(subjects[i % len(subjects)], [faces[i]])
        except BaseException as e:
            errors.append(e)

    ts = [threading.Thread(target=work, args=(k,)) for k in range(threads)]
    t = time.perf_counter()
    for th in ts:
        th.start()
    for th in ts:
        th.join()
    if errors:
        raise errors[0]
    return per * threads / (time.perf_counter() - t)


def _mean_ms(fn: Any, n: int = 200) -> float:
    t = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t) / n * 1e3


def _write_costs(backend: PostgresDatabase, crop: npt.NDArray[np.uint8]) -> dict[str, float]:
    """Where one PostgreSQL enrolment's time goes, on one thread (ms each): PNG-encoding the crop, borrowing a
    pooled connection (its check is one round trip) and a bare durable one-row commit (the WAL flush)."""
    with backend.pool.connection() as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS bench_commit (k int PRIMARY KEY, v int NOT NULL)")

    def commit() -> None:
        with backend.pool.connection() as conn:
            conn.execute("INSERT INTO bench_commit VALUES (1, 1) ON CONFLICT (k) DO UPDATE SET v = bench_commit.v + 1")

    def checkout() -> None:
        with backend.pool.connection():
            pass

    return {
        "encode_crop_ms": _mean_ms(lambda: encode_crop(crop)),
        "pool_checkout_ms": _mean_ms(checkout),
        "checkout_and_durable_commit_ms": _mean_ms(commit),
    }


def enrol(args: argparse.Namespace) -> None:
    syn = Synthetic(args.faces * 2, args.seed)
    vecs = np.concatenate([x for _, x in syn.chunks()])
    rng = np.random.default_rng(1)
    crops = [rng.integers(0, 255, (160, 160, 3), dtype=np.uint8) for _ in range(16)]
    faces = [NewFace(v, MODEL, crop=crops[i % 16], box={"x": 0, "y": 0, "width": 160, "height": 160})
             for i, v in enumerate(vecs)]  # fmt: skip
    results: dict[str, Any] = {
        "command": " ".join(["python", *sys.argv]),
        "cpu_count": os.cpu_count(),
        "faces": args.faces,
    }
    work = Path(tempfile.mkdtemp(prefix="facerec-enrol-bench-"))
    cluster = _cluster()
    try:
        for threads in (1, 8):
            local = open_gallery(work / f"data{threads}")
            subjects = [s.id for s in local.create_subjects([(f"s{i}", None) for i in range(100)])]
            local.add_faces(subjects[0], faces[:1])
            rate_local = _enrol_rate(local.add_faces, subjects, faces[: args.faces], threads)
            local.close()
            url = cluster.create_database(f"enrol_{threads}")
            backend = open_database(url, pool=PoolOptions(min_size=2, max_size=10))
            g = backend.gallery
            subjects = [s.id for s in g.create_subjects([(f"s{i}", None) for i in range(100)])]
            g.add_faces(subjects[0], faces[:1])
            rate_pg = _enrol_rate(g.add_faces, subjects, faces[: args.faces], threads)
            results[f"threads_{threads}"] = {
                "embedded_faces_per_s": rate_local,
                "postgres_faces_per_s": rate_pg,
                "ratio": rate_pg / rate_local,
            }
            if threads == 1:
                results["postgres_write_costs"] = {"add_faces_ms": 1e3 / rate_pg, **_write_costs(backend, crops[0])}
            backend.close()
            print(f"  {threads} thread(s): {results[f'threads_{threads}']}", flush=True)
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.out).write_text(json.dumps(results, indent=2))
    finally:
        cluster.destroy()


def parity(args: argparse.Namespace) -> None:
    from embeddings import default_threshold

    d = np.load(args.npz, allow_pickle=False)
    emb = np.asarray(d["embeddings"], np.float32)
    names = np.asarray(d["names"]).astype(str)
    model = str(d["model_id"]) if "model_id" in d.files else MODEL
    threshold = args.threshold if args.threshold is not None else default_threshold()
    rng = np.random.default_rng(args.seed)
    order = rng.permutation(len(emb))
    probe_idx: list[int] = []
    seen: dict[str, int] = {}
    counts = {n: int(c) for n, c in zip(*np.unique(names, return_counts=True), strict=True)}
    for i in order:  # one held-out image of each person with >= 2 images
        if counts[names[i]] >= 2 and names[i] not in seen and len(probe_idx) < args.probes:
            seen[names[i]] = int(i)
            probe_idx.append(int(i))
    held = set(probe_idx)
    enrol_idx = [int(i) for i in order if int(i) not in held][: args.gallery]
    people = sorted({names[i] for i in enrol_idx})
    work = Path(tempfile.mkdtemp(prefix="facerec-parity-"))
    cluster = _cluster()
    out: dict[str, Any] = {"command": " ".join(["python", *sys.argv]), "threshold": threshold, "model_id": model}
    try:
        local = open_gallery(work / "data", auto_maintain=False)
        backend = open_database(cluster.create_database("parity"))
        results = []
        for g in (local, backend.gallery):
            sids = {p: s.id for p, s in zip(people, g.create_subjects([(p, None) for p in people]), strict=True)}
            batch: dict[str, list[NewFace]] = {}
            for i in enrol_idx:
                batch.setdefault(sids[names[i]], []).append(NewFace(emb[i], model))
            t = time.perf_counter()
            g.add_faces_many(batch)
            print(f"  {type(g).__name__}: {len(enrol_idx)} faces in {time.perf_counter() - t:.1f} s", flush=True)
            res = g.search(emb[probe_idx], model_id=model, top_k=1)
            results.append([(r[0].subject_name, r[0].distance) if r else (None, 9.0) for r in res])
        out["faces"] = len(enrol_idx)
        out["subjects"] = len(people)
        out["probes"] = len(probe_idx)
        out["postgres_index"] = backend.gallery.stats().indexes[model].kind
        diffs = []
        same_top1 = same_decision = 0
        for k, ((ln, ld), (pn, pd)) in enumerate(zip(results[0], results[1], strict=True)):
            same_top1 += ln == pn
            same_decision += (ld <= threshold) == (pd <= threshold)
            if ln != pn or (ld <= threshold) != (pd <= threshold):
                diffs.append({"probe": names[probe_idx[k]], "embedded": [ln, ld], "postgres": [pn, pd]})
        out["same_top1"] = same_top1 / len(probe_idx)
        out["same_decision"] = same_decision / len(probe_idx)
        out["differences"] = diffs
        print(json.dumps({k: v for k, v in out.items() if k != "differences"}), flush=True)
        for diff in diffs:
            print(f"  differs: {diff}", flush=True)
        local.close()
        backend.close()
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(out, indent=2))
    finally:
        cluster.destroy()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("search")
    s.add_argument("--sizes", type=lambda v: [int(x) for x in v.split(",")], default=[100_000])
    s.add_argument("--probes", type=int, default=1000)
    s.add_argument("--latency-probes", type=int, default=500)
    s.add_argument("--m", type=int, default=DEFAULTS.build.m)
    s.add_argument("--ef-construction", type=int, default=DEFAULTS.build.ef_construction)
    s.add_argument("--ef-sweep", type=lambda v: [int(x) for x in v.split(",")], default=[40, 64, 100, 200])
    s.add_argument("--exact-below", type=int, default=DEFAULTS.exact_below)
    s.add_argument("--exact-probes", type=int, default=100, help="probes timed by the exact scan (0: none)")
    s.add_argument("--prewarm", action="store_true", help="load table and index into shared_buffers first")
    s.add_argument("--cluster", help="keep the PostgreSQL cluster in this folder and reuse its loaded databases")
    s.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", help="a PostgreSQL server setting")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--shape", type=Path, help="draw faces with the covariance of these embeddings (bench/faceshape.py)")
    s.add_argument("--out", default="reports/pg-search.json")
    e = sub.add_parser("enrol")
    e.add_argument("--faces", type=int, default=2000)
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--out", default="reports/pg-enrol.json")
    q = sub.add_parser("parity")
    q.add_argument("--npz", required=True)
    q.add_argument("--gallery", type=int, default=10_000)
    q.add_argument("--probes", type=int, default=1_000)
    q.add_argument("--threshold", type=float, default=None)
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--out", default="reports/pg-parity.json")
    args = p.parse_args()
    {"search": search, "enrol": enrol, "parity": parity}[args.cmd](args)


if __name__ == "__main__":
    main()
