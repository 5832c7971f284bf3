"""End-to-end benchmark (issue 6): the real server against a 1M-face gallery, and the naive pipeline.

Subcommands (run from the repository root with the project's venv, ``FACEREC_CACHE`` set):

``build``  (untimed; minutes) a persistent data dir with exactly ``--faces`` faces of the current model:
           the real LFW faces (every LFW image's embedding from ``--lfw-npz``, the production pipeline's,
           except one held-out image per person with >= 2 images, kept as probes) plus synthetic clustered
           unit vectors (``bench/gallery.py``'s generator: identities of 10 faces) up to the total; then the
           HNSW build and a snapshot, so a server starts from it in seconds. ``held_out.json`` lists the
           probes.
``photos`` test photos made from held-out LFW faces: the face region (central 150x150 of the deep-funnelled
           250x250 image, so no second face) scaled x3 pasted on a 1920x1080 canvas, and x1.6 on 640x480.
``naive``  the baseline in one process: ``mtcnn.MTCNN().detect_faces`` on the full photo, keras-facenet's
           architecture (``embeddings.facenet.build_model`` + the same weights) ``model.predict`` on the
           160x160 prewhitened crop, and a numpy L2 scan of the gallery's vectors (read from its SQLite).
``server`` the real ``facerec serve`` on the data dir: cold start to /readyz, idle RSS, one-client latency on
           1080p photos, 16 clients on 640x480 photos, and RSS growth over N requests after warm-up.

Timed subcommands hold the lock file ``reports/timed.lock`` per phase (``--lock``, the default), so that two timed
runs from this checkout never overlap.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.e2e_naive import naive  # noqa: E402
from bench.e2e_photos import photos  # noqa: E402
from bench.e2e_table import table  # noqa: E402
from bench.e2e_util import load_photos, spread, timed_lock, vm, write_result  # noqa: E402
from bench.paths import LFW, REPORTS  # noqa: E402
from bench.serverproc import BenchServer  # noqa: E402


def held_out_split(paths: npt.NDArray[Any], names: npt.NDArray[Any]) -> npt.NDArray[np.bool_]:
    """Mask of the probes: the last image (by path) of every person with >= 2 images."""
    held = np.zeros(len(paths), bool)
    last: dict[str, int] = {}
    count: dict[str, int] = {}
    for i, (p, n) in enumerate(zip(paths, names, strict=True)):
        count[n] = count.get(n, 0) + 1
        if n not in last or p > paths[last[n]]:
            last[n] = i
    for n, i in last.items():
        if count[n] >= 2:
            held[i] = True
    return held


def build(args: argparse.Namespace) -> None:
    import faiss

    from bench.gallery import PER_ID, Synthetic
    from embeddings.weights import MODEL_ID
    from service.gallery import NewFace, open_gallery

    data = Path(args.data)
    if data.exists() and any(data.iterdir()):
        raise SystemExit(f"{data} is not empty")
    data.mkdir(parents=True, exist_ok=True)
    lfw = np.load(args.lfw_npz)
    emb, paths, names = lfw["embeddings"].astype(np.float32), lfw["paths"], lfw["names"]
    held = held_out_split(paths, names)
    n_syn = args.faces - int((~held).sum())
    syn = Synthetic(n_syn, args.seed)
    t0 = time.perf_counter()
    g = open_gallery(data, auto_maintain=False)
    faiss.omp_set_num_threads(2)
    people = sorted(set(names[~held].tolist()))
    lfw_subjects = g.create_subjects([(n.replace("_", " "), {"source": "lfw", "lfw_name": n}) for n in people])
    by_name = {n: s.id for n, s in zip(people, lfw_subjects, strict=True)}
    batch: dict[str, list[NewFace]] = {}
    for i in np.flatnonzero(~held):
        batch.setdefault(by_name[names[i]], []).append(NewFace(emb[i], MODEL_ID, image_sha256=None))
    g.add_faces_many(batch)
    print(f"LFW: {int((~held).sum())} faces of {len(people)} people enrolled, {int(held.sum())} held out", flush=True)
    subjects = g.create_subjects([(f"synthetic {i}", {"source": "synthetic"}) for i in range(syn.ids)])
    for start, x in syn.chunks():
        b: dict[str, list[NewFace]] = {}
        for k, v in enumerate(x):
            b.setdefault(subjects[(start + k) // PER_ID].id, []).append(NewFace(v, MODEL_ID))
        g.add_faces_many(b)
        if start % 100_000 == 0:
            print(f"[{time.strftime('%H:%M:%S')}] synthetic {start + len(x)}/{n_syn}", flush=True)
    print(f"bulk add done in {time.perf_counter() - t0:.0f} s; building HNSW", flush=True)
    t = time.perf_counter()
    g.maintain()
    print(f"HNSW + snapshot in {time.perf_counter() - t:.0f} s; faces {g.face_count(MODEL_ID)}", flush=True)
    g.close()
    probes = [
        {"path": str(paths[i]), "name": str(names[i]), "subject_id": by_name.get(str(names[i]))}
        for i in np.flatnonzero(held)
    ]
    meta = {
        "faces": args.faces,
        "lfw_faces": int((~held).sum()),
        "lfw_people": len(people),
        "synthetic_faces": n_syn,
        "synthetic_identities": syn.ids,
        "model_id": MODEL_ID,
        "seed": args.seed,
        "held_out": probes,
    }
    (data / "held_out.json").write_text(json.dumps(meta, indent=1))
    print(f"done in {time.perf_counter() - t0:.0f} s; peak RSS {vm('self', 'VmHWM'):.0f} MiB", flush=True)


# ---------------------------------------------------------------------------------------------- photos


# ---------------------------------------------------------------------------------------------- server


async def drive(
    url: str,
    token: str,
    shots: list[tuple[str, bytes, str | None]],
    *,
    clients: int,
    requests: int,
    on_sample: Any = None,
    sample_every: int = 0,
) -> dict[str, Any]:
    """``requests`` POST /v1/identify from ``clients`` concurrent clients, photos round-robin; latencies,
    status counts, faces returned, top-1 correct, wall time. ``on_sample(done)`` every ``sample_every``."""
    import httpx

    lat: list[float] = []
    status: dict[str, int] = {}
    faces = correct = 0
    next_i = 0
    done = 0
    errors: list[str] = []
    limits = httpx.Limits(max_connections=clients + 2, max_keepalive_connections=clients + 2)
    async with httpx.AsyncClient(base_url=url, headers={"X-API-Key": token}, limits=limits, timeout=120) as client:

        async def worker() -> None:
            nonlocal next_i, faces, correct, done
            while next_i < requests:
                i = next_i
                next_i += 1
                name, blob, expected = shots[i % len(shots)]
                t = time.perf_counter()
                try:
                    r = await client.post("/v1/identify", files={"image": (name, blob, "image/jpeg")})
                    code = str(r.status_code)
                except httpx.HTTPError as exc:
                    code, r = f"transport {type(exc).__name__}", None
                lat.append(time.perf_counter() - t)
                status[code] = status.get(code, 0) + 1
                if r is not None and r.status_code == 200:
                    body = r.json()
                    faces += len(body["faces"])
                    best = (
                        body["faces"][0]["candidates"][0]
                        if body["faces"] and body["faces"][0].get("candidates")
                        else None
                    )
                    correct += int(best is not None and best.get("subject_id") == expected)
                elif len(errors) < 5:
                    errors.append(f"{code}: {r.text[:300] if r is not None else ''}")
                done += 1
                if on_sample is not None and sample_every and done % sample_every == 0:
                    on_sample(done)

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        wall = time.perf_counter() - t0
    ok = sum(n for c, n in status.items() if c.startswith("2"))
    return {
        "clients": clients,
        "requests": len(lat),
        "status": status,
        "errors": len(lat) - ok,
        "error_samples": errors,
        "faces_returned": faces,
        "top1_correct": correct,
        "wall_s": round(wall, 2),
        "requests_per_s": round(len(lat) / wall, 2),
        "faces_per_s": round(faces / wall, 2),
        "latency": spread(lat),
    }


def server(args: argparse.Namespace) -> None:
    data, out = Path(args.data), Path(args.out)
    env = dict(kv.split("=", 1) for kv in args.server_env)
    big = load_photos(Path(args.photos), "1080p")
    small = load_photos(Path(args.photos), "480p")
    log = out.with_suffix(".server.log")
    srv = BenchServer(data, log, env)
    token = srv.create_key("e2e")
    res: dict[str, Any] = {"server_env": env, "data": str(data)}
    samples: list[dict[str, float]] = []
    try:
        with timed_lock(args.lock, "cold start + one client"):
            res["cold_start_s"] = round(srv.start(timeout_s=600.0, poll_s=0.05), 2)
            time.sleep(5)
            res["idle_rss_mib"] = round(vm(srv.pid), 1)
            print(f"cold start {res['cold_start_s']} s, idle RSS {res['idle_rss_mib']} MiB", flush=True)
            asyncio.run(drive(srv.url, token, big, clients=1, requests=args.warmup))
            one = asyncio.run(drive(srv.url, token, big, clients=1, requests=args.one_client))
            res["one_client_1080p"] = one
            print(f"one client 1080p: {json.dumps(one)}", flush=True)
            res["rss_after_one_client_mib"] = round(vm(srv.pid), 1)
        if args.concurrent:
            with timed_lock(args.lock, f"{args.clients} clients"):
                conc = asyncio.run(drive(srv.url, token, small, clients=args.clients, requests=args.concurrent))
                res[f"clients_{args.clients}_480p"] = conc
                print(f"{args.clients} clients 480p: {json.dumps(conc)}", flush=True)
        if args.soak:

            def sample(done: int) -> None:
                samples.append(
                    {"requests": done, "t": round(time.monotonic() - t0, 1), "rss_mib": round(vm(srv.pid), 1)}
                )
                print(f"  [{time.strftime('%H:%M:%S')}] {samples[-1]}", flush=True)

            t0 = time.monotonic()
            total = 0
            parts = []
            samples.append({"requests": 0, "t": 0.0, "rss_mib": round(vm(srv.pid), 1)})
            while total < args.soak:
                n = min(args.soak_chunk, args.soak - total)
                with timed_lock(args.lock, f"soak {total}..{total + n}"):
                    part = asyncio.run(
                        drive(
                            srv.url,
                            token,
                            small,
                            clients=args.clients,
                            requests=n,
                            on_sample=lambda d, base=total: sample(base + d),
                            sample_every=args.sample_every,
                        )
                    )
                parts.append(part)
                total += n
            warm = next(s for s in samples if s["requests"] >= args.soak_warmup)
            end = samples[-1]
            res["soak"] = {
                "requests": total,
                "clients": args.clients,
                "errors": sum(p["errors"] for p in parts),
                "warmup_requests": warm["requests"],
                "rss_warmup_mib": warm["rss_mib"],
                "rss_end_mib": end["rss_mib"],
                "rss_growth_pct": round(100 * (end["rss_mib"] - warm["rss_mib"]) / warm["rss_mib"], 2),
                "rss_growth_from_idle_pct": round(
                    100 * (end["rss_mib"] - res["idle_rss_mib"]) / res["idle_rss_mib"], 2
                ),
                "faces_per_s": round(sum(p["faces_returned"] for p in parts) / sum(p["wall_s"] for p in parts), 2),
                "samples": samples,
            }
            print(f"soak: {json.dumps({k: v for k, v in res['soak'].items() if k != 'samples'})}", flush=True)
    finally:
        res["exit_code"] = srv.stop() or 0
        write_result(out, args.label, res)
        print(f"wrote {out} [{args.label}]", flush=True)


# ----------------------------------------------------------------------------------------------- table


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="persistent 1M-face data dir (untimed)")
    b.add_argument("--data", default=str(REPORTS / "e2e/gallery-1m"))
    b.add_argument("--faces", type=int, default=1_000_000)
    b.add_argument("--lfw-npz", default=str(REPORTS / "lfw_embeddings.npz"))
    b.add_argument("--seed", type=int, default=0)
    ph = sub.add_parser("photos", help="test photos from held-out LFW faces")
    ph.add_argument("--data", default=str(REPORTS / "e2e/gallery-1m"))
    ph.add_argument("--out", default=str(REPORTS / "e2e/photos"))
    ph.add_argument("--lfw", default=str(LFW), help="the LFW data set (lfw-deepfunneled/ inside)")
    ph.add_argument("--count", type=int, default=40)
    ph.add_argument("--seed", type=int, default=0)
    nv = sub.add_parser("naive", help="the naive pipeline (timed)")
    nv.add_argument("--data", default=str(REPORTS / "e2e/gallery-1m"))
    nv.add_argument("--photos", default=str(REPORTS / "e2e/photos"))
    nv.add_argument("--kind", default="1080p", choices=["1080p", "480p"])
    nv.add_argument("--count", type=int, default=20)
    nv.add_argument("--out", default=str(REPORTS / "e2e/e2e.json"))
    nv.add_argument("--lock", action=argparse.BooleanOptionalAction, default=True)
    sv = sub.add_parser("server", help="the real server (timed)")
    sv.add_argument("--data", default=str(REPORTS / "e2e/gallery-1m"))
    sv.add_argument("--photos", default=str(REPORTS / "e2e/photos"))
    sv.add_argument("--out", default=str(REPORTS / "e2e/e2e.json"))
    sv.add_argument("--label", default="server")
    sv.add_argument("--warmup", type=int, default=10, help="untimed one-client requests first")
    sv.add_argument("--one-client", type=int, default=200, help="one-client 1080p requests")
    sv.add_argument("--clients", type=int, default=16)
    sv.add_argument("--concurrent", type=int, default=400, help="requests with --clients clients (480p)")
    sv.add_argument("--soak", type=int, default=0, help="then this many more 480p requests, RSS sampled")
    sv.add_argument("--soak-chunk", type=int, default=3000, help="requests per lock hold")
    sv.add_argument("--soak-warmup", type=int, default=1000, help="RSS growth is measured from here")
    sv.add_argument("--sample-every", type=int, default=250)
    sv.add_argument("--server-env", action="append", default=[], metavar="KEY=VALUE")
    sv.add_argument("--lock", action=argparse.BooleanOptionalAction, default=True)
    tb = sub.add_parser("table", help="summary rows for docs/BENCHMARKS.md")
    tb.add_argument("--results", default=str(REPORTS / "e2e/e2e.json"))
    tb.add_argument("--clients", type=int, default=16)
    tb.add_argument("--server-key", default="server", help="the run's --label")
    tb.add_argument("--naive-results", default=None, help="naive results in another JSON file")
    args = p.parse_args()
    {"build": build, "photos": photos, "naive": naive, "server": server, "table": table}[args.cmd](args)


if __name__ == "__main__":
    main()
