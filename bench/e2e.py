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

Timed subcommands take ``flock /tmp/facerec-timed.lock`` themselves per phase (``--lock``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.paths import LFW, REPORTS  # noqa: E402

TIMED_LOCK = Path("/tmp/facerec-timed.lock")


def _vm(pid: int | str = "self", key: str = "VmRSS") -> float:
    """``key`` (VmRSS, VmHWM) of ``pid`` from /proc, in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


@contextlib.contextmanager
def timed_lock(enabled: bool, what: str) -> Iterator[None]:
    """Hold the shared timed-measurement lock (flock) for one phase."""
    if not enabled:
        yield
        return
    with open(TIMED_LOCK, "a") as fh:
        t = time.monotonic()
        fcntl.flock(fh, fcntl.LOCK_EX)
        print(f"[{time.strftime('%H:%M:%S')}] lock for {what} (waited {time.monotonic() - t:.0f} s)", flush=True)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


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
    print(f"done in {time.perf_counter() - t0:.0f} s; peak RSS {_vm('self', 'VmHWM'):.0f} MiB", flush=True)


# ---------------------------------------------------------------------------------------------- photos
def _background(w: int, h: int, rng: np.random.Generator) -> npt.NDArray[np.uint8]:
    """A smooth colour gradient with low-frequency blotches (no faces, nothing MTCNN should fire on)."""
    import cv2

    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    c0, c1 = rng.uniform(40, 215, 3), rng.uniform(40, 215, 3)
    t = (xx / w * 0.6 + yy / h * 0.4)[..., None]
    img = c0 * (1 - t) + c1 * t
    blobs = cv2.resize(rng.normal(0, 25, (9, 16, 3)).astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC)
    return np.clip(img + blobs, 0, 255).astype(np.uint8)


def make_photo(face_path: Path, size: tuple[int, int], scale: float, rng: np.random.Generator) -> bytes:
    """JPEG (quality 90) of ``size`` (w, h) with the central 150x150 of an LFW image scaled by ``scale`` pasted
    at a random place (one face; LFW deep-funnelled images are 250x250 with the face centred)."""
    import cv2

    w, h = size
    src = _decode(face_path.read_bytes())
    face = src[50:200, 50:200]
    side = round(150 * scale)
    face = np.asarray(cv2.resize(face, (side, side), interpolation=cv2.INTER_CUBIC), dtype=np.uint8)
    img = _background(w, h, rng)
    x, y = int(rng.integers(0, w - side)), int(rng.integers(0, h - side))
    img[y : y + side, x : x + side] = face
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(img, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok
    return bytes(buf)


def photos(args: argparse.Namespace) -> None:
    meta = json.loads((Path(args.data) / "held_out.json").read_text())
    rng = np.random.default_rng(args.seed)
    probes = [meta["held_out"][i] for i in rng.choice(len(meta["held_out"]), args.count, replace=False)]
    out = Path(args.out)
    for kind, size, scale in (("1080p", (1920, 1080), 3.0), ("480p", (640, 480), 1.6)):
        (out / kind).mkdir(parents=True, exist_ok=True)
        for k, pr in enumerate(probes):
            blob = make_photo(Path(args.lfw) / "lfw-deepfunneled" / pr["path"], size, scale, rng)
            (out / kind / f"{k:03d}_{pr['name']}.jpg").write_bytes(blob)
    (out / "photos.json").write_text(json.dumps(probes, indent=1))
    print(f"{len(probes)} photos each at 1920x1080 and 640x480 in {out}")


def load_photos(root: Path, kind: str) -> list[tuple[str, bytes, str | None]]:
    """``[(file name, jpeg bytes, expected subject id)]``."""
    probes = json.loads((root / "photos.json").read_text())
    files = sorted((root / kind).glob("*.jpg"))
    return [(f.name, f.read_bytes(), probes[int(f.name[:3])]["subject_id"]) for f in files]


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def spread(seconds: list[float]) -> dict[str, float]:
    ms = [v * 1e3 for v in seconds]
    return {
        "n": len(ms),
        "p50_ms": round(pct(ms, 50), 1),
        "p95_ms": round(pct(ms, 95), 1),
        "p99_ms": round(pct(ms, 99), 1),
        "min_ms": round(min(ms), 1) if ms else float("nan"),
        "max_ms": round(max(ms), 1) if ms else float("nan"),
        "mean_ms": round(float(np.mean(ms)), 1) if ms else float("nan"),
    }


def _write(out: Path, key: str, value: Any) -> None:
    """Merge ``{key: value}`` into the JSON file ``out``."""
    data = json.loads(out.read_text()) if out.exists() else {}
    data[key] = value
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(data, indent=1) + "\n")


# ----------------------------------------------------------------------------------------------- naive
def gallery_matrix(data: Path, model_id: str) -> tuple[npt.NDArray[np.float32], npt.NDArray[Any]]:
    """Every face vector of ``model_id`` in the data dir's SQLite (read-only) and its subject's id."""
    import sqlite3

    conn = sqlite3.connect(f"file:{data / 'gallery.sqlite3'}?mode=ro", uri=True)
    rows = conn.execute(
        "SELECT s.id, f.embedding FROM faces f JOIN subjects s ON s.pk = f.subject_pk WHERE f.model_id = ?",
        (model_id,),
    ).fetchall()
    conn.close()
    vectors = np.frombuffer(b"".join(r[1] for r in rows), dtype="<f4").reshape(len(rows), 128)
    return np.ascontiguousarray(vectors), np.array([r[0] for r in rows])


def _decode(blob: bytes) -> npt.NDArray[np.uint8]:
    """JPEG bytes -> RGB uint8 (H, W, 3)."""
    import cv2

    bgr = cv2.imdecode(np.frombuffer(blob, np.uint8), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError("not an image")
    return np.asarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), dtype=np.uint8)


def naive(args: argparse.Namespace) -> None:
    """The naive pipeline, timed per photo from the JPEG bytes to the nearest gallery face."""
    import cv2
    from mtcnn import MTCNN

    from embeddings.align import prewhiten
    from embeddings.facenet import build_model, l2_normalize
    from embeddings.weights import MODEL_ID, resolve

    t = time.perf_counter()
    vectors, subject_of = gallery_matrix(Path(args.data), MODEL_ID)
    norms = (vectors * vectors).sum(axis=1)
    print(f"gallery: {len(vectors)} vectors read in {time.perf_counter() - t:.1f} s", flush=True)
    detector = MTCNN()
    model = build_model()
    model.load_weights(str(resolve(allow_fetch=False)))
    shots = load_photos(Path(args.photos), args.kind)[: args.count]

    def run_one(blob: bytes) -> tuple[str | None, float, int]:
        rgb = _decode(blob)
        faces = detector.detect_faces(rgb)
        if not faces:
            return None, float("nan"), 0
        crops = []
        for f in faces:
            x, y, w, h = (max(0, int(v)) for v in f["box"])
            crops.append(cv2.resize(rgb[y : y + h, x : x + w], (160, 160), interpolation=cv2.INTER_LINEAR))
        emb = l2_normalize(model.predict(prewhiten(np.stack(crops).astype(np.uint8)), verbose=0))
        d2 = norms[None, :] - 2.0 * (emb @ vectors.T) + (emb * emb).sum(axis=1)[:, None]  # numpy scan
        best = int(np.argmin(d2[0]))
        return str(subject_of[best]), float(np.sqrt(max(d2[0, best], 0.0))), len(faces)

    for _, blob, _ in shots[:2]:
        run_one(blob)  # warm-up (first predict builds the graph)
    with timed_lock(args.lock, f"naive {args.kind}"):
        times, correct = [], 0
        for _, blob, expected in shots:
            t = time.perf_counter()
            sid, _dist, _n = run_one(blob)
            times.append(time.perf_counter() - t)
            correct += int(sid == expected)
        stages = _naive_stages(shots[0][1], detector, model, vectors, norms)
    res = {
        "what": "mtcnn.MTCNN().detect_faces + keras-facenet InceptionResNetV1 model.predict + numpy L2 scan",
        "photos": args.kind,
        "gallery_vectors": len(vectors),
        "latency": spread(times),
        "top1_correct": correct,
        "stages_ms_first_photo": stages,
        "rss_mib": round(_vm(), 0),
    }
    print(json.dumps(res, indent=1), flush=True)
    _write(Path(args.out), f"naive_{args.kind}", res)


def _naive_stages(blob: bytes, detector: Any, model: Any, vectors: Any, norms: Any) -> dict[str, float]:
    """Median of 3 of each naive stage on one photo, ms (where the time goes)."""
    import cv2

    from embeddings.align import prewhiten

    rgb = _decode(blob)
    det, enc, scan = [], [], []
    for _ in range(3):
        t = time.perf_counter()
        faces = detector.detect_faces(rgb)
        det.append(time.perf_counter() - t)
        x, y, w, h = (max(0, int(v)) for v in faces[0]["box"])
        crop = cv2.resize(rgb[y : y + h, x : x + w], (160, 160))
        t = time.perf_counter()
        emb = model.predict(prewhiten(crop[None].astype(np.uint8)), verbose=0)
        enc.append(time.perf_counter() - t)
        emb = emb / np.linalg.norm(emb)
        t = time.perf_counter()
        d2 = norms - 2.0 * (vectors @ emb[0]) + 1.0
        int(np.argmin(d2))
        scan.append(time.perf_counter() - t)
    return {
        "detect_faces": round(float(np.median(det)) * 1e3, 1),
        "predict": round(float(np.median(enc)) * 1e3, 1),
        "numpy_scan": round(float(np.median(scan)) * 1e3, 1),
    }


# ---------------------------------------------------------------------------------------------- server
class Server:
    """``python -m service.cli serve`` on the data dir, loopback, its own port; stopped with SIGTERM."""

    def __init__(self, data: Path, log: Path, env: dict[str, str]) -> None:
        from bench.serverproc import free_port

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.data, self.log = data, log
        # one API key drives every client here: the per-key rate limit (600/min by default) is off
        base = {"PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "2", "FACEREC_RATE_LIMIT_PER_MINUTE": "0"}
        self.env = {**os.environ, **base, **env}
        self.proc: Any = None

    def start(self, timeout: float = 600.0) -> float:
        """Start and poll /readyz every 50 ms; seconds from the spawn to the first 200."""
        import subprocess

        from bench.serverproc import serve_command, wait_ready

        t0 = time.monotonic()
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                serve_command(self.port, self.data), cwd=REPO, env=self.env, stdout=log, stderr=subprocess.STDOUT
            )
        wait_ready(self.proc, self.url, timeout_s=timeout, poll_s=0.05, tail=lambda: self.log.read_text()[-2000:])
        return time.monotonic() - t0

    def rss(self) -> float:
        return _vm(self.proc.pid)

    def stop(self) -> int:
        from bench.serverproc import stop

        code = stop(self.proc)
        return 0 if code is None else int(code)


def create_key(data: Path) -> str:
    import subprocess

    cmd = [sys.executable, "-m", "service.cli", "keys", "create", "--scope", "admin", "--name", "e2e", "--json"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run([*cmd, "--data", str(data)], cwd=REPO, env=env, capture_output=True, text=True, check=True)
    return str(json.loads(out.stdout.strip().splitlines()[-1])["token"])


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
    token = create_key(data)
    big = load_photos(Path(args.photos), "1080p")
    small = load_photos(Path(args.photos), "480p")
    log = out.with_suffix(".server.log")
    srv = Server(data, log, env)
    res: dict[str, Any] = {"server_env": env, "data": str(data)}
    samples: list[dict[str, float]] = []
    try:
        with timed_lock(args.lock, "cold start + one client"):
            res["cold_start_s"] = round(srv.start(), 2)
            time.sleep(5)
            res["idle_rss_mib"] = round(srv.rss(), 1)
            print(f"cold start {res['cold_start_s']} s, idle RSS {res['idle_rss_mib']} MiB", flush=True)
            asyncio.run(drive(srv.url, token, big, clients=1, requests=args.warmup))
            one = asyncio.run(drive(srv.url, token, big, clients=1, requests=args.one_client))
            res["one_client_1080p"] = one
            print(f"one client 1080p: {json.dumps(one)}", flush=True)
            res["rss_after_one_client_mib"] = round(srv.rss(), 1)
        if args.concurrent:
            with timed_lock(args.lock, f"{args.clients} clients"):
                conc = asyncio.run(drive(srv.url, token, small, clients=args.clients, requests=args.concurrent))
                res[f"clients_{args.clients}_480p"] = conc
                print(f"{args.clients} clients 480p: {json.dumps(conc)}", flush=True)
        if args.soak:

            def sample(done: int) -> None:
                samples.append({"requests": done, "t": round(time.monotonic() - t0, 1), "rss_mib": round(srv.rss(), 1)})
                print(f"  [{time.strftime('%H:%M:%S')}] {samples[-1]}", flush=True)

            t0 = time.monotonic()
            total = 0
            parts = []
            samples.append({"requests": 0, "t": 0.0, "rss_mib": round(srv.rss(), 1)})
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
        res["exit_code"] = srv.stop()
        _write(out, args.label, res)
        print(f"wrote {out} [{args.label}]", flush=True)


# ----------------------------------------------------------------------------------------------- table
def table(args: argparse.Namespace) -> None:
    """The e2e rows of docs/BENCHMARKS.md's summary table from ``e2e.json`` (markdown on stdout)."""
    d = json.loads(Path(args.results).read_text())
    naive_d = json.loads(Path(args.naive_results).read_text()) if args.naive_results else d
    srv, nv = d.get(args.server_key, {}), naive_d.get("naive_1080p", {})
    cmd = "`python bench/e2e.py server`"
    rows = []
    one = srv.get("one_client_1080p", {}).get("latency", {})
    base = nv.get("latency", {})
    for q, target in (("p50", 150), ("p99", 300)):
        mine, theirs = one.get(f"{q}_ms"), base.get(f"{q}_ms")
        ratio = f"{theirs / mine:.1f}x faster" if mine and theirs else "-"
        rows.append(
            (
                cmd + " + `naive`",
                f"identify, 1080p photo, 1M-face gallery, 1 client: {q} {mine} ms",
                f"{theirs} ms",
                ratio,
                f"<= {target} ms; >= 4x",
                "yes" if mine and mine <= target and theirs and theirs / mine >= 4 else "no",
            )
        )
    for label, key in (("16 clients", f"clients_{args.clients}_480p"),):
        c = srv.get(key, {})
        lat = c.get("latency", {})
        rows.append(
            (
                cmd,
                f"{label}, 640x480 photos: {c.get('faces_per_s')} faces/s, p50/p95/p99 {lat.get('p50_ms')}/"
                f"{lat.get('p95_ms')}/{lat.get('p99_ms')} ms, {c.get('errors')} errors of {c.get('requests')}",
                "-",
                "-",
                "0 errors; report faces/s and spread",
                "yes" if c.get("errors") == 0 else "no",
            )
        )
    cs, idle = srv.get("cold_start_s"), srv.get("idle_rss_mib")
    rows.append((cmd, f"cold start to /readyz 200: {cs} s", "-", "-", "<= 15 s", "yes" if cs and cs <= 15 else "no"))
    rows.append(
        (
            cmd,
            f"RSS at idle (1M faces loaded): {idle} MiB",
            "-",
            "-",
            "<= 1.5 GB",
            "yes" if idle and idle <= 1430 else "no",
        )
    )
    soak = d.get("soak10k", {}).get("soak")
    if soak:
        rows.append(
            (
                "`python bench/e2e.py server --soak 10000`",
                f"RSS after {soak['requests']} requests vs after {soak['warmup_requests']}: "
                f"{soak['rss_warmup_mib']} -> {soak['rss_end_mib']} MiB ({soak['rss_growth_pct']:+.1f}%)",
                "-",
                "-",
                "<= 5%",
                "yes" if soak["rss_growth_pct"] <= 5 else "no",
            )
        )
    for r in rows:
        print("| " + " | ".join(str(x) for x in r) + " |")


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
