"""Load and soak: N concurrent clients mixing identify, verify and enrol against a real server, on loopback only.

Starts its own server (``python -m service.cli serve --host 127.0.0.1``) on a free port with a fresh data dir
and ``FACEREC_RATE_LIMIT_PER_MINUTE=0`` (the per-key limiter off; ``FACEREC_MAX_PENDING`` stays at its default,
so ``overloaded`` 429s may happen and are counted apart), creates an admin key with ``service.cli keys create``,
enrols the 5-celebrity train photos, then runs the clients for ``--duration`` seconds:

- identify: a val photo;
- verify: two enrolled train photos (same or different person);
- enrol: a train photo re-encoded (other JPEG quality and comment, so never a sha256 duplicate) onto its subject.

Every request has a timeout; the run is capped in requests (``--max-requests``) and in total time (duration plus
``--grace``), then stops by itself. Server RSS (``/proc/<pid>/status`` VmRSS) and open fds are sampled every
``--sample-every`` seconds; "after warm-up" is the first sample at or after min(60 s, 10% of the duration).

Errors are any non-2xx answer except 429, plus transport errors and timeouts. Exit 1 when there are errors, when
RSS grows more than ``--max-rss-growth`` percent from warm-up to the end, or the fd count more than ``--fd-slack``.
Usage:

    .venv/bin/python bench/load.py [--duration 600] [--clients 32] [--out reports/load.json]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import random
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.serverproc import BenchServer  # noqa: E402

HOST = "127.0.0.1"  # loopback only: every request goes here
KINDS = ("identify", "verify", "enrol")


def default_dataset() -> Path:
    cache = Path(os.environ.get("FACEREC_CACHE", str(Path.home() / ".cache" / "facerec")))
    return cache / "datasets" / "5-celebrity-faces-dataset"


def photos(root: Path) -> dict[str, list[Path]]:
    """``{person: [jpg, ...]}`` under ``root/<person>/``."""
    return {d.name: sorted(p for p in d.iterdir() if p.is_file()) for d in sorted(root.iterdir()) if d.is_dir()}


def proc_sample(pid: int) -> tuple[int, int]:
    """(VmRSS in KiB, open fds) of ``pid``."""
    rss = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1])
            break
    return rss, len(os.listdir(f"/proc/{pid}/fd"))


def proc_detail(pid: int) -> dict[str, int]:
    """Threads, and anonymous / file-backed resident memory (KiB, ``RssAnon``/``RssFile``) of ``pid``."""
    out: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("Threads", "RssAnon", "RssFile"):
            out[key.lower()] = int(value.split()[0])
    return out


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    k = (len(s) - 1) * q / 100
    lo, hi = int(k), min(int(k) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


@dataclass
class Stats:
    status: dict[str, dict[str, int]] = field(default_factory=lambda: {k: {} for k in KINDS})
    latency: dict[str, list[float]] = field(default_factory=lambda: {k: [] for k in KINDS})
    error_samples: list[dict[str, Any]] = field(default_factory=list)
    enrol_stored: int = 0
    enrol_rejected: dict[str, int] = field(default_factory=dict)

    def record(self, kind: str, status: str, seconds: float, detail: str = "") -> None:
        counts = self.status[kind]
        counts[status] = counts.get(status, 0) + 1
        self.latency[kind].append(seconds)
        if is_error(status) and len(self.error_samples) < 20:
            self.error_samples.append({"kind": kind, "status": status, "detail": detail[:500]})

    @property
    def requests(self) -> int:
        return sum(sum(c.values()) for c in self.status.values())


def is_error(status: str) -> bool:
    return not (status.isdigit() and (200 <= int(status) < 300 or int(status) == 429))


def reencode(img: Image.Image, n: int) -> bytes:
    """The same picture as a different JPEG byte string (quality varies; the comment makes it unique)."""
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=80 + n % 16, comment=f"facerec-load-{n}".encode())
    return buf.getvalue()


async def setup_gallery(
    client: httpx.AsyncClient, train: dict[str, list[Path]], timeout: float
) -> tuple[dict[str, str], dict[str, list[Path]], dict[str, Any]]:
    """One subject per person with all their train photos; ({person: subject_id}, {person: enrolled photos})."""
    subjects: dict[str, str] = {}
    enrolled: dict[str, list[Path]] = {}
    summary: dict[str, Any] = {}
    for person, files in train.items():
        r = await client.post("/v1/subjects", json={"name": person, "metadata": {"load": True}}, timeout=timeout)
        r.raise_for_status()
        sid = str(r.json()["id"])
        subjects[person] = sid
        multipart = [("images", (p.name, p.read_bytes(), "image/jpeg")) for p in files]
        r = await client.post(f"/v1/subjects/{sid}/faces", files=multipart, timeout=timeout)
        r.raise_for_status()
        body = r.json()
        rejected = {int(x["index"]): str(x["code"]) for x in body["rejected"]}
        enrolled[person] = [p for i, p in enumerate(files) if i not in rejected]
        summary[person] = {"photos": len(files), "stored": len(body["faces"]), "rejected": rejected}
        print(f"  enrolled {person}: {len(body['faces'])}/{len(files)} stored, rejected {rejected}", flush=True)
    return subjects, enrolled, summary


async def run_load(args: argparse.Namespace) -> dict[str, Any]:
    root = args.dataset
    train, val = photos(root / "train"), photos(root / "val")
    tmp = Path(tempfile.mkdtemp(prefix="facerec-load-"))
    extra_env = dict(kv.split("=", 1) for kv in args.server_env)
    server = BenchServer(tmp / "data", tmp / "server.log")
    server.env.pop("FACEREC_MAX_PENDING", None)  # the default, so overload 429s stay possible
    server.env.update(extra_env)
    server.data.mkdir()
    stats = Stats()
    samples: list[dict[str, float]] = []
    result: dict[str, Any] = {}
    try:
        token = server.create_key("load")
        t0 = time.monotonic()
        server.start()
        print(f"server pid {server.pid} on {server.url} ready in {time.monotonic() - t0:.1f}s", flush=True)
        limits = httpx.Limits(max_connections=args.clients + 4, max_keepalive_connections=args.clients + 4)
        async with httpx.AsyncClient(base_url=server.url, headers={"X-API-Key": token}, limits=limits) as client:
            assert client.base_url.host == HOST
            t0 = time.monotonic()
            subjects, enrolled, setup = await setup_gallery(client, train, timeout=args.setup_timeout)
            result["setup"] = {"seconds": round(time.monotonic() - t0, 1), "subjects": setup}
            val_files = [p for files in val.values() for p in files]
            pair_pool = [(person, p) for person, files in enrolled.items() for p in files]
            decoded = {(person, p): Image.open(p).convert("RGB") for person, p in pair_pool}
            bytes_cache = {p: p.read_bytes() for p in val_files + [p for _, p in pair_pool]}

            start = time.monotonic()
            end = start + args.duration
            hard_end = end + args.grace
            warmup_at = min(60.0, 0.1 * args.duration)
            issued = 0
            counter = 0

            async def one(kind: str, rng: random.Random) -> None:
                nonlocal counter
                t = time.monotonic()
                status, detail = "", ""
                try:
                    if kind == "identify":
                        p = rng.choice(val_files)
                        files = {"image": (p.name, bytes_cache[p], "image/jpeg")}
                        r = await client.post("/v1/identify", files=files, data={"top_k": "3"}, timeout=args.timeout)
                    elif kind == "verify":
                        (_, a), (_, b) = rng.sample(pair_pool, 2)
                        files = {
                            "image_a": (a.name, bytes_cache[a], "image/jpeg"),
                            "image_b": (b.name, bytes_cache[b], "image/jpeg"),
                        }
                        r = await client.post("/v1/verify", files=files, timeout=args.timeout)
                    else:
                        person, p = rng.choice(pair_pool)
                        counter += 1
                        blob = await asyncio.to_thread(reencode, decoded[(person, p)], counter)
                        multipart = [("images", (f"{p.stem}-{counter}.jpg", blob, "image/jpeg"))]
                        r = await client.post(
                            f"/v1/subjects/{subjects[person]}/faces", files=multipart, timeout=args.timeout
                        )
                    status = str(r.status_code)
                    if kind == "enrol" and r.status_code in (200, 201):
                        body = r.json()
                        stats.enrol_stored += len(body["faces"])
                        for x in body["rejected"]:
                            stats.enrol_rejected[x["code"]] = stats.enrol_rejected.get(x["code"], 0) + 1
                    elif r.status_code == 429:
                        status = f"429 {r.json().get('error', {}).get('code', '?')}"
                    elif not 200 <= r.status_code < 300:
                        detail = r.text
                except httpx.HTTPError as exc:
                    status, detail = f"transport {type(exc).__name__}", str(exc)
                stats.record(kind, status, time.monotonic() - t, detail)
                if status.startswith("429"):
                    await asyncio.sleep(1.0)  # Retry-After: 1

            async def worker(i: int) -> None:
                nonlocal issued
                rng = random.Random(args.seed * 1000 + i)
                weights = [args.mix_identify, args.mix_verify, args.mix_enrol]
                while time.monotonic() < end and issued < args.max_requests:
                    issued += 1
                    await one(rng.choices(KINDS, weights)[0], rng)

            async def sampler() -> None:
                while True:
                    rss, fds = proc_sample(server.pid)
                    t = time.monotonic() - start
                    detail = proc_detail(server.pid)
                    samples.append({"t": round(t, 1), "rss_kib": rss, "fds": fds, "requests": stats.requests, **detail})
                    if len(samples) % args.print_every == 1:
                        print(
                            f"  t={t:6.0f}s rss={rss / 1024:7.1f} MiB (anon {detail['rssanon'] / 1024:.1f})"
                            f" fds={fds:4d} threads={detail['threads']} requests={stats.requests}",
                            flush=True,
                        )
                    await asyncio.sleep(args.sample_every)

            print(f"load: {args.clients} clients for {args.duration:.0f}s (warm-up {warmup_at:.0f}s)", flush=True)
            sampling = asyncio.create_task(sampler())
            workers = [asyncio.create_task(worker(i)) for i in range(args.clients)]
            _, pending = await asyncio.wait(workers, timeout=max(1.0, hard_end - time.monotonic()))
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            elapsed = time.monotonic() - start
            rss, fds = proc_sample(server.pid)
            samples.append({"t": round(elapsed, 1), "rss_kib": rss, "fds": fds, "requests": stats.requests})
            sampling.cancel()
            await asyncio.gather(sampling, return_exceptions=True)
            gallery = (await client.get("/readyz", timeout=10)).json()

        warm = next((s for s in samples if s["t"] >= warmup_at), samples[-1])
        last = samples[-1]
        kinds: dict[str, Any] = {}
        for kind in KINDS:
            lat = stats.latency[kind]
            kinds[kind] = {
                "requests": len(lat),
                "status": dict(sorted(stats.status[kind].items())),
                "errors": sum(n for s, n in stats.status[kind].items() if is_error(s)),
                "429": sum(n for s, n in stats.status[kind].items() if s.startswith("429")),
                **{f"p{q}_s": (None if (v := percentile(lat, q)) is None else round(v, 3)) for q in (50, 95, 99)},
                "max_s": round(max(lat), 3) if lat else None,
            }
        all_lat = [x for k in KINDS for x in stats.latency[k]]
        result.update(
            {
                "clients": args.clients,
                "duration_s": args.duration,
                "elapsed_s": round(elapsed, 1),
                "requests": stats.requests,
                "cancelled_in_flight": len(pending),
                "errors": sum(k["errors"] for k in kinds.values()),
                "429": sum(k["429"] for k in kinds.values()),
                "throughput_rps": round(stats.requests / elapsed, 2) if elapsed else None,
                "latency_all": {f"p{q}_s": round(percentile(all_lat, q) or 0.0, 3) for q in (50, 95, 99)},
                "kinds": kinds,
                "enrol_stored": stats.enrol_stored,
                "enrol_rejected": stats.enrol_rejected,
                "error_samples": stats.error_samples,
                "warmup": warm,
                "end": last,
                "rss_growth_pct": round(100.0 * (last["rss_kib"] - warm["rss_kib"]) / warm["rss_kib"], 2),
                "fd_growth": int(last["fds"] - warm["fds"]),
                "rss_max_kib": max(s["rss_kib"] for s in samples),
                "readyz_after": gallery,
                "samples": samples,
            }
        )
    finally:
        code = server.stop()
        result["server_exit_code"] = code
        result["server_log_tail"] = server.tail(2000)
        if args.keep:
            print(f"kept {tmp}", flush=True)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return result


def print_table(res: dict[str, Any]) -> None:
    def ms(v: float | None) -> str:
        return "-" if v is None else f"{v * 1000:.0f}"

    print()
    cols = f"{'requests':>8} {'errors':>6} {'429':>5} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'max ms':>8}"
    print(f"{'kind':9} {cols}  status")
    for kind, k in res["kinds"].items():
        print(
            f"{kind:9} {k['requests']:8d} {k['errors']:6d} {k['429']:5d} {ms(k['p50_s']):>8} {ms(k['p95_s']):>8}"
            f" {ms(k['p99_s']):>8} {ms(k['max_s']):>8}  {k['status']}"
        )
    a = res["latency_all"]
    print(
        f"{'all':9} {res['requests']:8d} {res['errors']:6d} {res['429']:5d} {ms(a['p50_s']):>8} {ms(a['p95_s']):>8}"
        f" {ms(a['p99_s']):>8}"
    )
    w, e = res["warmup"], res["end"]
    print(f"\nthroughput {res['throughput_rps']} req/s over {res['elapsed_s']} s with {res['clients']} clients")
    print(f"enrol: {res['enrol_stored']} faces stored, rejected {res['enrol_rejected']}")
    print(
        f"server RSS {w['rss_kib'] / 1024:.1f} MiB at warm-up (t={w['t']}s) -> {e['rss_kib'] / 1024:.1f} MiB at end"
        f" (t={e['t']}s): {res['rss_growth_pct']:+.2f}% (max {res['rss_max_kib'] / 1024:.1f} MiB)"
    )
    print(f"server fds {w['fds']} at warm-up -> {e['fds']} at end: {res['fd_growth']:+d}")
    print(f"server exit code {res['server_exit_code']}")
    for s in res["error_samples"][:5]:
        print(f"  error: {s}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=float, default=600.0, help="seconds of load (default 600)")
    ap.add_argument("--clients", type=int, default=32, help="concurrent clients (default 32)")
    ap.add_argument("--out", type=Path, default=None, help="write the JSON result here")
    ap.add_argument("--dataset", type=Path, default=default_dataset(), help="5-celebrity dataset root")
    ap.add_argument("--timeout", type=float, default=120.0, help="per-request timeout, s")
    ap.add_argument("--setup-timeout", type=float, default=300.0, help="per-request timeout while enrolling, s")
    ap.add_argument("--grace", type=float, default=180.0, help="hard stop this long after --duration, s")
    ap.add_argument("--max-requests", type=int, default=100_000, help="hard cap on load requests")
    ap.add_argument("--sample-every", type=float, default=5.0, help="RSS/fd sampling period, s")
    ap.add_argument("--mix-identify", type=float, default=5.0)
    ap.add_argument("--mix-verify", type=float, default=3.0)
    ap.add_argument("--mix-enrol", type=float, default=2.0)
    ap.add_argument("--max-rss-growth", type=float, default=5.0, help="fail above this RSS growth, %%")
    ap.add_argument("--fd-slack", type=int, default=5, help="fail above this fd growth")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--keep", action="store_true", help="keep the temporary data dir and server log")
    ap.add_argument("--print-every", type=int, default=12, help="print every Nth RSS sample")
    ap.add_argument(
        "--server-env", action="append", default=[], metavar="KEY=VALUE", help="extra environment for the server"
    )
    args = ap.parse_args(argv)

    res = asyncio.run(run_load(args))
    print_table(res)
    failures = []
    if res["errors"]:
        failures.append(f"{res['errors']} errors")
    if res["rss_growth_pct"] > args.max_rss_growth:
        failures.append(f"RSS grew {res['rss_growth_pct']}% > {args.max_rss_growth}%")
    if res["fd_growth"] > args.fd_slack:
        failures.append(f"fds grew {res['fd_growth']} > {args.fd_slack}")
    res["failures"] = failures
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(res, indent=2) + "\n")
        print(f"wrote {args.out}")
    print("FAIL: " + "; ".join(failures) if failures else "PASS")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
