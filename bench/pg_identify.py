"""``POST /v1/identify`` latency at a large gallery: the embedded backend (SQLite + FAISS) against PostgreSQL +
pgvector, through real ``facerec serve`` processes, with the same real photos.

    python bench/pg_identify.py --faces 100000 --requests 200 \\
        --out reports/pg-identify.json

Both galleries get the same ``--faces`` synthetic faces (bench/gallery.py's ``Synthetic``: clustered unit vectors
under the served model's id, so every identify searches all of them), loaded with the backends' bulk paths
outside the server: the embedded one with ``create_subjects`` + ``add_faces_many`` and its HNSW index built
(``maintain``) and saved; PostgreSQL (a local PostgreSQL 18 + pgvector started by the script, bench/pg_gallery.py's
settings) with COPY and its per-model HNSW index built. Then a server is started on each (the embedded one on its
data dir, the other with ``FACEREC_DATABASE_URL``) and the 5-celebrity train photos are enrolled through the API
(one subject per person), so the val photos have real matches among the synthetic faces.

Timing: one client, requests alternating between the two servers (embedded, PostgreSQL, embedded, ...) so that
both see the same machine load, each val photo in turn; ``--warmup`` requests each first, then ``--requests``
timed ones each (client-side wall time of the whole request: upload, detection, FaceNet, search, rescoring,
JSON). Every answer must count ``--faces`` + the enrolled faces and name the photo's person. PostgreSQL's
committed transactions over the timed requests (``pg_stat_database.xact_commit``) give the round trips per
identify. Then, with the servers stopped, the storage part alone in this process: ``rank_subjects`` (search +
rescoring of the 20 nearest subjects) for the val photos' embeddings on each backend, ``--storage-rounds`` passes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.gallery import MODEL, Synthetic, add_synthetic
from bench.load import default_dataset, photos, setup_gallery
from bench.pg_gallery import _cluster, _load
from bench.serverproc import BenchServer
from service.gallery import open_gallery
from service.gallery.postgres import open_database
from service.gallery.postgres import vectors as pgvec


def load_embedded(data: Path, syn: Synthetic) -> dict[str, Any]:
    t = time.perf_counter()
    g = open_gallery(data, auto_maintain=False)
    add_synthetic(g, syn, g.create_subjects([(f"id{i}", None) for i in range(syn.ids)]))
    added = time.perf_counter() - t
    g.maintain()  # the HNSW index the server would otherwise build in the background after it started
    out: dict[str, Any] = {"load_s": round(added, 1), "index_build_s": round(time.perf_counter() - t - added, 1)}
    out["index"] = g.stats().indexes[MODEL].kind
    g.close()  # saves the snapshot the server opens
    return out


def load_postgres(url: str, syn: Synthetic) -> dict[str, Any]:
    backend = open_database(url)
    t = time.perf_counter()
    _load(backend, syn)
    added = time.perf_counter() - t
    with backend.pool.connection() as conn:
        pgvec.ensure_index(conn, MODEL, backend.gallery.options)
    out: dict[str, Any] = {"load_s": round(added, 1), "index_build_s": round(time.perf_counter() - t - added, 1)}
    out["index"] = backend.gallery.stats().indexes[MODEL].kind
    backend.close()
    return out


def xact_commits(url: str) -> int:
    """Transactions committed so far in ``url``'s database (``pg_stat_database``, after its 1 s flush delay)."""
    import psycopg

    time.sleep(1.5)
    with psycopg.connect(url, autocommit=True) as c:
        c.execute("SELECT pg_stat_clear_snapshot()")
        row = c.execute("SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()").fetchone()
    return int(row[0]) if row else 0


def storage_only(data: Path, url: str, probes: list[tuple[str, bytes]], repeat: int) -> dict[str, dict[str, float]]:
    """The storage part of identify alone, in this process: ``rank_subjects`` (index search, then the 20 nearest
    subjects rescored from their faces) for the probes' real embeddings, on each backend; ms."""
    from embeddings import FaceAnalyzer
    from service.recognition import rank_subjects

    fa = FaceAnalyzer()
    embs = [f.embedding for _, image in probes for f in fa.analyze(image)[:1]]
    backend = open_database(url)
    out = {}
    for name, g in (("embedded", open_gallery(data)), ("postgres", backend.gallery)):
        times = []
        for i in range((repeat + 1) * len(embs)):
            t = time.perf_counter()
            rank_subjects(g, embs[i % len(embs)][None], model_id=fa.model_id, top_k=5)
            times.append(time.perf_counter() - t)
        ms = np.array(times[len(embs) :]) * 1e3  # the first round warms up
        out[name] = {"p50_ms": round(float(np.percentile(ms, 50)), 2), "p99_ms": round(float(np.percentile(ms, 99)), 2)}
        g.close()
    backend.close()
    return out


async def enrol_celebrities(server: BenchServer, token: str, train: dict[str, list[Path]]) -> dict[str, str]:
    async with httpx.AsyncClient(base_url=server.url, headers={"X-API-Key": token}) as c:
        subjects, _, _ = await setup_gallery(c, train, timeout=300.0)
    return subjects


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--faces", type=int, default=100_000)
    ap.add_argument("--requests", type=int, default=200, help="timed requests per backend")
    ap.add_argument("--warmup", type=int, default=20, help="untimed requests per backend first")
    ap.add_argument("--dataset", type=Path, default=default_dataset(), help="5-celebrity dataset root")
    ap.add_argument("--storage-rounds", type=int, default=5, help="passes over the probes, in-process")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("reports/pg-identify.json"))
    args = ap.parse_args()

    train, val = photos(args.dataset / "train"), photos(args.dataset / "val")
    probes = [(person, p.read_bytes()) for person, files in val.items() for p in files]
    syn = Synthetic(args.faces, args.seed)
    work = Path(tempfile.mkdtemp(prefix="facerec-pg-identify-"))
    cluster = _cluster()
    out: dict[str, Any] = {"command": " ".join(["python", *sys.argv]), "faces": args.faces}
    servers: dict[str, BenchServer] = {}
    try:
        print(f"[{time.strftime('%H:%M:%S')}] loading {args.faces:,} faces into both backends", flush=True)
        out["embedded"] = load_embedded(work / "data", syn)
        url = cluster.create_database("identify")
        out["postgres"] = load_postgres(url, syn)
        print(f"  embedded {out['embedded']}\n  postgres {out['postgres']}", flush=True)
        servers["embedded"] = BenchServer(work / "data", work / "embedded.log")
        (work / "pgdata").mkdir()
        servers["postgres"] = BenchServer(work / "pgdata", work / "postgres.log", env={"FACEREC_DATABASE_URL": url})
        clients: dict[str, httpx.Client] = {}
        subjects: dict[str, dict[str, str]] = {}
        for name, s in servers.items():
            token = s.create_key("bench")
            out[name]["ready_s"] = round(s.start(), 1)
            subjects[name] = asyncio.run(enrol_celebrities(s, token, train))
            clients[name] = httpx.Client(base_url=s.url, headers={"X-API-Key": token}, timeout=120)
        times: dict[str, list[float]] = {name: [] for name in servers}
        commits = 0
        right: dict[str, int] = dict.fromkeys(servers, 0)
        sizes: dict[str, set[int]] = {name: set() for name in servers}
        for i in range(args.warmup + args.requests):
            person, image = probes[i % len(probes)]
            for name, c in clients.items():
                t = time.perf_counter()
                r = c.post("/v1/identify", files={"image": ("p.jpg", image, "image/jpeg")})
                took = time.perf_counter() - t
                r.raise_for_status()
                if i < args.warmup:
                    continue
                if i == args.warmup and name == "embedded":
                    commits = xact_commits(url)
                body = r.json()
                times[name].append(took)
                sizes[name].add(int(body["gallery_faces"]))
                match = body["faces"][0]["match"] if body["faces"] else None
                right[name] += bool(match and match["subject_id"] == subjects[name][person])
        out["postgres"]["transactions_per_identify"] = round((xact_commits(url) - commits) / args.requests, 1)
        for c in clients.values():
            c.close()
        for name in servers:
            ms = np.array(times[name]) * 1e3
            out[name].update(
                p50_ms=round(float(np.percentile(ms, 50)), 1),
                p99_ms=round(float(np.percentile(ms, 99)), 1),
                requests=len(ms),
                gallery_faces=sorted(sizes[name]),
                right_person=right[name],
            )
        out["p50_ratio"] = round(out["postgres"]["p50_ms"] / out["embedded"]["p50_ms"], 3)
        out["p99_ratio"] = round(out["postgres"]["p99_ms"] / out["embedded"]["p99_ms"], 3)
        for name, s in servers.items():
            out[name]["exit_code"] = s.stop()
        out["rank_subjects_in_process"] = storage_only(work / "data", url, probes, args.storage_rounds)
        print(f"  search + rescore in-process: {out['rank_subjects_in_process']}", flush=True)
    finally:
        for server in servers.values():
            server.stop()
        cluster.destroy()
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(out, indent=1))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1))
    big = all(min(out[n]["gallery_faces"]) >= args.faces for n in servers)
    ok = big and out["p50_ratio"] <= 1.25
    verdict = "PASS" if ok else "FAIL"
    print(f"wrote {args.out}\n{verdict}: p50 ratio {out['p50_ratio']} (<= 1.25), >= {args.faces} faces each")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
