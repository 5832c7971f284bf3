"""Micro-batching: the service over real HTTP vs the encoder alone.

1. Offline: the analyzer's encoder on aligned crops in this process, faces/s at batch 1, 16 and 32; and the
   whole pipeline on the 640x480 photos (``offline_pipeline``: decode + detect in 4 threads, whose detector
   network calls are shared, then align and ONE encoder call per 32 photos), the offline ceiling for ``photos``.
2. The service (``python -m service.cli serve`` on loopback, a subprocess) answering ``/v1/embed``:
   16 concurrent clients (faces/s, requests/s, latency p50/p99) and one client alone, each with the
   micro-batcher on (defaults) and off (``FACEREC_BATCH_MAX_SIZE=0``); ``baseline`` is a server run from
   another checkout (``--baseline-repo``, e.g. an export of an older commit), for side-by-side figures.

Three request types, because ``/v1/embed`` decodes and (by default) detects before it encodes:

- ``aligned``: the pipeline's own aligned 160x160 crops of the 5-celebrity faces (JPEG, quality 95) sent with
  ``face=aligned``: no detection, only decode, resize and encode (the path clients with aligned crops use);
- ``crops``: tight face crops (160x160 JPEG, the face's MTCNN box with 40% margin) from the 5-celebrity set,
  where detection is cheap;
- ``photos``: 640x480 JPEG photos (the 5-celebrity photos letterboxed), where detection costs more.

The clients are as light as they can be, so that the shared 2 cores go to the server: one asyncio loop in this
process, one keep-alive connection per client, every HTTP request built once beforehand (multipart body
included), and of each answer only the status, the length and the number of ``"embedding"`` keys read.

Usage (a timed run: alone on the machine)::

    .venv/bin/python bench/batching.py --out reports/batching.json
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import httpx
import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.paths import write_report  # noqa: E402
from bench.rawload import latency, load, requests_for  # noqa: E402
from bench.serverproc import REPO, BenchServer  # noqa: E402


def jpeg(img: Image.Image, quality: int = 90) -> bytes:
    out = io.BytesIO()
    img.convert("RGB").save(out, format="JPEG", quality=quality)
    return out.getvalue()


def letterbox(img: Image.Image, width: int = 640, height: int = 480) -> Image.Image:
    """``img`` scaled to fit ``width`` x ``height`` and centred on grey."""
    scale = min(width / img.width, height / img.height)
    small = img.convert("RGB").resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))))
    canvas = Image.new("RGB", (width, height), (128, 128, 128))
    canvas.paste(small, ((width - small.width) // 2, (height - small.height) // 2))
    return canvas


def make_inputs(analyzer: Any, paths: list[Path]) -> tuple[list[bytes], list[bytes], np.ndarray]:
    """(tight 160x160 face crops as JPEG, 640x480 photos as JPEG, aligned crops for the offline encoder)."""
    from embeddings.images import decode_image

    crops, photos, aligned = [], [], []
    for path in paths:
        img = Image.open(path).convert("RGB")
        rgb = np.asarray(img)
        dets = analyzer.detector.detect(rgb)
        if len(dets) != 1:
            continue
        d = dets[0]
        x, y, w, h = d.box.x, d.box.y, d.box.width, d.box.height
        side = max(w, h) * 1.4
        cx, cy = x + w / 2, y + h / 2
        box = (int(cx - side / 2), int(cy - side / 2), int(cx + side / 2), int(cy + side / 2))
        crop = jpeg(img.crop(box).resize((160, 160)))
        if len(analyzer.detector.detect(decode_image(crop))) != 1:  # MTCNN misses some very tight faces
            continue
        crops.append(crop)
        photos.append(jpeg(letterbox(img)))
        aligned.append(analyzer.align(rgb, d))
    return crops, photos, np.stack(aligned)


def offline(
    analyzer: Any, aligned: np.ndarray, seconds: float, batches: tuple[int, ...] = (1, 16, 32)
) -> dict[str, float]:
    """Faces/s of ``analyzer.encoder.encode`` at batch 1, 16 and 32 (2 warm-up calls each), with the analyzer's
    flip-TTA setting (what the service runs), and at batch 32 without flip-TTA (half the network work)."""
    reps = np.concatenate([aligned] * (32 // len(aligned) + 1))[:32]
    out = {}
    flip = analyzer.encoder.flip_tta
    for batch, tta in [(b, flip) for b in batches] + ([(32, False)] if len(batches) > 1 else []):
        analyzer.encoder.flip_tta = tta
        x = reps[:batch]
        analyzer.encoder.encode(x)
        analyzer.encoder.encode(x)
        n, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds or n < 3:
            analyzer.encoder.encode(x)
            n += 1
        out[f"batch_{batch}" + ("" if tta == flip else "_no_flip")] = n * batch / (time.perf_counter() - start)
    analyzer.encoder.flip_tta = flip
    return out


def offline_pipeline(analyzer: Any, photos: list[bytes], seconds: float, chunk: int = 32) -> float:
    """Faces/s of the whole pipeline in this process on ``photos`` (encoded images): per chunk of ``chunk`` photos,
    decode + detect in 4 threads (concurrent detections share network calls), align, one encoder call."""
    from concurrent.futures import ThreadPoolExecutor

    reps = (photos * (chunk // len(photos) + 1))[:chunk]

    def detect(data: bytes) -> tuple[Any, Any]:
        rgb = analyzer.load_image(data)
        return rgb, analyzer.detector.detect(rgb)

    def once(pool: ThreadPoolExecutor) -> int:
        found = list(pool.map(detect, reps))
        crops = [analyzer.align(rgb, d) for rgb, dets in found for d in dets]
        if crops:
            analyzer.encoder.encode(np.stack(crops))
        return len(crops)

    with ThreadPoolExecutor(4) as pool:
        once(pool)
        faces, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            faces += once(pool)
        return faces / (time.perf_counter() - start)


class Service:
    """``facerec serve`` on a free loopback port with extra environment, in its own empty data dir; ``repo``: the
    checkout to run it from (default this one)."""

    def __init__(self, env: dict[str, str], repo: Path = REPO) -> None:
        self.tmp = tempfile.TemporaryDirectory(prefix="facerec-bench-")
        self.server = BenchServer(Path(self.tmp.name) / "data", Path(self.tmp.name) / "server.log", env, repo=repo)
        self.port, self.url = self.server.port, self.server.url
        try:
            self.server.start()
        except RuntimeError:
            self.close()
            raise

    def metrics(self) -> str:
        return httpx.get(f"{self.url}/metrics", timeout=10).text

    def close(self) -> None:
        self.server.stop()
        self.tmp.cleanup()


def batch_stats(text: str) -> tuple[float, float]:
    """(encoder calls, faces) the micro-batcher has made so far, from ``/metrics``."""

    def value(name: str) -> float:
        m = re.search(rf"^{name} ([0-9.e+]+)$", text, re.M)
        return float(m.group(1)) if m else 0.0

    return value("facerec_encoder_batch_faces_count"), value("facerec_encoder_batch_faces_sum")


def sweep_wait(
    waits: list[float],
    kinds: list[str],
    images: dict[str, list[bytes]],
    fields: dict[str, dict[str, str]],
    offline_b32: Callable[[], float],
    args: argparse.Namespace,
    extra: dict[str, str],
) -> dict[str, Any]:
    """16-client runs against one batched server per ``FACEREC_BATCH_MAX_WAIT_MS`` in ``waits``, all started
    at once (idle servers use no CPU) and taken in turns, ``args.sweep_rounds`` rounds per request type (the
    order reversed every other round), with an offline batch-32 figure before each round and after the last,
    so that the shared machine's drift hits every setting alike."""
    servers = {w: Service({"FACEREC_BATCH_MAX_WAIT_MS": str(w), **extra}) for w in waits}
    out: dict[str, Any] = {}
    try:
        for kind in kinds:
            runs: dict[float, list[dict[str, Any]]] = {w: [] for w in waits}
            brackets = []
            for r in range(args.sweep_rounds):
                brackets.append(offline_b32())
                for w in waits if r % 2 == 0 else waits[::-1]:
                    server = servers[w]
                    calls0, faces0 = batch_stats(server.metrics())
                    reqs = requests_for(server.port, images[kind], fields.get(kind))
                    fig = load(server.port, reqs, args.clients, args.seconds, args.warmup)
                    calls1, faces1 = batch_stats(server.metrics())
                    fig["mean_faces_per_encoder_call"] = round((faces1 - faces0) / max(calls1 - calls0, 1), 2)
                    fig.pop("latencies_ms")
                    runs[w].append(fig)
                    print(f"sweep {kind:7s} wait={w:g} round={r}", json.dumps(fig), flush=True)
            brackets.append(offline_b32())
            b32 = float(np.mean(brackets))
            out[kind] = {
                "offline_b32_brackets": [round(b, 2) for b in brackets],
                **{
                    f"wait_{w:g}ms": {
                        "faces_per_s": [f["faces_per_s"] for f in runs[w]],
                        "mean_faces_per_s": round(float(np.mean([f["faces_per_s"] for f in runs[w]])), 2),
                        "vs_offline_b32": round(float(np.mean([f["faces_per_s"] for f in runs[w]])) / b32, 3),
                        "p50_ms": [f["p50_ms"] for f in runs[w]],
                        "p99_ms": [f["p99_ms"] for f in runs[w]],
                        "faces_per_encoder_call": [f["mean_faces_per_encoder_call"] for f in runs[w]],
                    }
                    for w in waits
                },
            }
            print(f"sweep {kind}", json.dumps(out[kind]), flush=True)
    finally:
        for server in servers.values():
            server.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=20.0, help="measured seconds per load run")
    ap.add_argument("--warmup", type=float, default=3.0, help="unmeasured seconds before each load run")
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--offline-seconds", type=float, default=5.0, help="seconds per offline batch size at start")
    ap.add_argument(
        "--rounds", type=int, default=6, help="alternating one-client runs per server (of seconds/rounds); 0: none"
    )
    ap.add_argument("--kinds", default="aligned,crops,photos", help="request types to run (aligned, crops, photos)")
    ap.add_argument("--modes", default="batched,unbatched", help="server modes (batched, unbatched, baseline)")
    ap.add_argument("--baseline-repo", type=Path, help="the checkout the `baseline` mode's server runs from")
    ap.add_argument("--pipeline-seconds", type=float, default=0.0, help="seconds of offline_pipeline (0: skip)")
    ap.add_argument("--env", action="append", default=[], help="extra server setting NAME=VALUE (repeatable)")
    ap.add_argument("--sweep-wait", help="instead: compare these FACEREC_BATCH_MAX_WAIT_MS values (comma-separated)")
    ap.add_argument("--sweep-rounds", type=int, default=3, help="rounds of the --sweep-wait comparison per type")
    ap.add_argument("--out", type=Path, help="write the figures as JSON here")
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the servers on kill, too

    from embeddings import FaceAnalyzer
    from embeddings.weights import sample_dataset_path

    root = sample_dataset_path()
    paths = sorted(p for p in (root / "val").rglob("*.jpg"))
    analyzer = FaceAnalyzer()
    analyzer.warm_up()
    crops, photos, aligned = make_inputs(analyzer, paths)
    print(f"{len(crops)} inputs (one face each in both the tight crop and the photo)", flush=True)
    result: dict[str, Any] = {
        "inputs": len(crops),
        "encoder": analyzer.config.encoder,
        "flip_tta": analyzer.config.flip_tta,
        "detector": getattr(analyzer.detector, "backend", "?"),
        "offline_faces_per_s": offline(analyzer, aligned, args.offline_seconds),
    }
    print({k: result[k] for k in ("encoder", "flip_tta", "detector")}, flush=True)
    print("offline encoder faces/s:", result["offline_faces_per_s"], flush=True)
    if args.pipeline_seconds > 0:
        result["offline_pipeline_photos_faces_per_s"] = round(
            offline_pipeline(analyzer, photos, args.pipeline_seconds), 2
        )
        print("offline pipeline (photos) faces/s:", result["offline_pipeline_photos_faces_per_s"], flush=True)

    def offline_b32() -> float:  # the same work as the service (flip-TTA as configured), 4 s
        return offline(analyzer, aligned, 4.0, batches=(32,))["batch_32"]

    extra = dict(kv.split("=", 1) for kv in args.env)
    modes = {"batched": {}, "unbatched": {"FACEREC_BATCH_MAX_SIZE": "0"}, "baseline": {}}
    fields = {"aligned": {"face": "aligned"}}
    images = {"aligned": [jpeg(Image.fromarray(a), quality=95) for a in aligned], "crops": crops, "photos": photos}
    result["server_env"] = extra
    if args.sweep_wait:
        waits = [float(w) for w in args.sweep_wait.split(",")]
        result["sweep_wait"] = sweep_wait(waits, args.kinds.split(","), images, fields, offline_b32, args, extra)
        write_report(args.out, result)
        return
    names = args.modes.split(",")
    servers: dict[str, Service] = {}
    try:
        for mode in names:
            repo = args.baseline_repo if mode == "baseline" else REPO
            if repo is None:
                raise SystemExit("the baseline mode needs --baseline-repo")
            servers[mode] = Service({**modes[mode], **extra}, repo.resolve())
        for kind in args.kinds.split(","):
            for mode in names:  # many clients
                server = servers[mode]
                calls0, faces0 = batch_stats(server.metrics())
                before = offline_b32() if mode == "batched" else None
                reqs = requests_for(server.port, images[kind], fields.get(kind))
                fig = load(server.port, reqs, args.clients, args.seconds, args.warmup)
                if before is not None:  # bracket the run: the shared machine's speed drifts
                    fig["offline_b32_around"] = [round(before, 2), round(offline_b32(), 2)]
                calls1, faces1 = batch_stats(server.metrics())
                if calls1 > calls0:  # warm-up requests included
                    fig["mean_faces_per_encoder_call"] = round((faces1 - faces0) / (calls1 - calls0), 2)
                fig.pop("latencies_ms")
                result[f"{mode}/{kind}/{args.clients}"] = fig
                print(f"{mode:9s} {kind:6s} clients={args.clients:2d}", json.dumps(fig), flush=True)
            # one client alone: short runs alternating between the servers, so that drift hits both alike
            runs: dict[str, list[dict[str, Any]]] = {mode: [] for mode in names}
            for r in range(args.rounds):
                for mode in names if r % 2 == 0 else names[::-1]:
                    warm = args.warmup if r == 0 else 0.5
                    port = servers[mode].port
                    reqs = requests_for(port, images[kind], fields.get(kind))
                    runs[mode].append(load(port, reqs, 1, args.seconds / args.rounds, warm))
            for mode in names if args.rounds else []:
                result[f"{mode}/{kind}/1"] = fig = latency(runs[mode])
                print(f"{mode:9s} {kind:6s} clients= 1", json.dumps(fig), flush=True)
    finally:
        for server in servers.values():
            server.close()

    for kind in args.kinds.split(","):
        key = f"batched/{kind}/{args.clients}"
        if key in result:
            b32 = float(np.mean(result[key]["offline_b32_around"]))
            result[f"ratio/{kind}/{args.clients}_clients_vs_offline_b32"] = round(result[key]["faces_per_s"] / b32, 3)
        if key in result and f"baseline/{kind}/{args.clients}" in result:
            base = result[f"baseline/{kind}/{args.clients}"]["faces_per_s"]
            result[f"ratio/{kind}/{args.clients}_clients_vs_baseline"] = round(result[key]["faces_per_s"] / base, 3)
        if key in result and kind == "photos" and "offline_pipeline_photos_faces_per_s" in result:
            pipeline = result["offline_pipeline_photos_faces_per_s"]
            result[f"ratio/photos/{args.clients}_clients_vs_offline_pipeline"] = round(
                result[key]["faces_per_s"] / pipeline, 3
            )
        if f"batched/{kind}/1" in result and f"baseline/{kind}/1" in result:
            result[f"ratio/{kind}/1_client_p50_vs_baseline"] = round(
                result[f"batched/{kind}/1"]["p50_ms"] / result[f"baseline/{kind}/1"]["p50_ms"], 3
            )
        solo_b, solo_u = result.get(f"batched/{kind}/1"), result.get(f"unbatched/{kind}/1")
        if solo_b and solo_u:
            result[f"ratio/{kind}/1_client_p50_batched_vs_unbatched"] = round(solo_b["p50_ms"] / solo_u["p50_ms"], 3)
    print(json.dumps({k: v for k, v in result.items() if k.startswith("ratio")}, indent=1))
    write_report(args.out, result)


if __name__ == "__main__":
    main()
