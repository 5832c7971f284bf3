"""Shared by the replica benchmarks (bench/replicas.py, bench/replica_faults.py): a local PostgreSQL + pgvector
(service/devdb.py) with N real ``facerec serve`` replicas on it, unique photos, and the gallery read back through
the API for the final ledger comparison. Loopback only; every process started here is stopped by :meth:`close`.
"""

from __future__ import annotations

import io
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `bench` when run as a script

from bench.load import photos, proc_sample
from bench.serverproc import BenchServer
from service.devdb import DevCluster


def unique_photo(img: Image.Image, n: int) -> bytes:
    """``img`` with seeded +-3 levels of pixel noise, as JPEG: other pixels for every ``n``, so its embedding is
    its own (a JPEG comment alone keeps the pixels, and two subjects holding the same pixels would tie)."""
    arr = np.asarray(img, np.int16)
    noise = np.random.default_rng([7, n]).integers(-3, 4, arr.shape, dtype=np.int16)
    buf = io.BytesIO()
    Image.fromarray(np.clip(arr + noise, 0, 255).astype(np.uint8)).save(buf, "JPEG", quality=92)
    return buf.getvalue()


def same_pixels(img: Image.Image, n: int) -> bytes:
    """``img`` as a JPEG whose bytes depend on ``n`` (a comment) but whose pixels do not: the quality verdict of
    one variant holds for all."""
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=95, comment=f"facerec-replicas-{n}".encode())
    return buf.getvalue()


def train_images(dataset: Path) -> list[tuple[str, Image.Image]]:
    """Every train photo of the 5-celebrity set, decoded: ``[(person, RGB image), ...]``."""
    return [
        (person, Image.open(p).convert("RGB")) for person, files in photos(dataset / "train").items() for p in files
    ]


class ReplicaSet:
    """A fresh local PostgreSQL cluster and ``n`` replicas on its ``facerec`` database, each with its own data
    dir and port, the per-key rate limit off; ``token`` is an admin key made with ``facerec keys create``."""

    def __init__(self, n: int, env: dict[str, str] | None = None) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="facerec-replicas-"))
        self.root.chmod(0o755)  # the cluster's user (facerec-pg under root) must reach pg/
        self.cluster = DevCluster(self.root / "pg")
        self.cluster.start()
        self.url = self.cluster.url()
        self.env = {"FACEREC_DATABASE_URL": self.url, **(env or {})}
        self.servers = [
            BenchServer(self.root / f"data{i}", self.root / f"replica{i}.log", env=self.env) for i in range(n)
        ]
        for s in self.servers:
            s.data.mkdir()
        self.token = self.servers[0].create_key("bench")

    def start(self) -> list[float]:
        """Start every replica at once; seconds each took to answer ``/readyz``."""
        with ThreadPoolExecutor(len(self.servers)) as pool:
            return list(pool.map(BenchServer.start, self.servers))

    def rss_mib(self) -> list[float]:
        """Resident memory of each running replica, MiB (0 when it is not running)."""
        out = []
        for s in self.servers:
            alive = s.proc is not None and s.proc.poll() is None
            out.append(proc_sample(s.pid)[0] / 1024 if alive else 0.0)
        return out

    def close(self, keep: bool = False) -> list[int | None]:
        """Stop every replica and the cluster; their exit codes. The directory goes unless ``keep``."""
        codes = [s.stop() for s in self.servers]
        if keep:
            self.cluster.stop()
            print(f"kept {self.root}", flush=True)
        else:
            self.cluster.destroy()
            shutil.rmtree(self.root, ignore_errors=True)
        return codes


def gallery_state(client: httpx.Client) -> dict[str, dict[str, Any]]:
    """Every subject as the API lists it: ``{subject_id: {"name", "face_count", "faces": {face_id: sha256}}}``
    (``GET /v1/subjects`` page by page, then ``GET /v1/subjects/{id}/faces`` of each)."""
    out: dict[str, dict[str, Any]] = {}
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 500, **({"cursor": cursor} if cursor else {})}
        r = client.get("/v1/subjects", params=params)
        r.raise_for_status()
        page = r.json()
        for s in page["items"]:
            out[s["id"]] = {"name": s["name"], "face_count": s["face_count"], "faces": {}}
        cursor = page["next_cursor"]
        if not cursor:
            break
    for sid, s in out.items():
        r = client.get(f"/v1/subjects/{sid}/faces")
        if r.status_code == 404:  # erased between the two listings: nothing else should be erasing now
            s["gone"] = True
            continue
        r.raise_for_status()
        s["faces"] = {int(f["id"]): f["image_sha256"] for f in r.json()["items"]}
    return out


def sql_consistency(url: str) -> dict[str, int]:
    """Straight from PostgreSQL: rows, orphans and whether the trigger-kept counts match the tables."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as c:

        def one(q: str) -> int:
            row = c.execute(q).fetchone()
            return int(row[0]) if row and row[0] is not None else 0

        return {
            "subjects": one("SELECT count(*) FROM subjects"),
            "faces": one("SELECT count(*) FROM faces"),
            "subjects_without_faces": one(
                "SELECT count(*) FROM subjects s WHERE NOT EXISTS (SELECT 1 FROM faces f WHERE f.subject_pk = s.pk)"
            ),
            "faces_without_subject": one(
                "SELECT count(*) FROM faces f WHERE NOT EXISTS (SELECT 1 FROM subjects s WHERE s.pk = f.subject_pk)"
            ),
            "faces_without_crop": one(
                "SELECT count(*) FROM faces f WHERE NOT EXISTS (SELECT 1 FROM face_crops c WHERE c.face_id = f.id)"
            ),
            "crops_without_face": one(
                "SELECT count(*) FROM face_crops c WHERE NOT EXISTS (SELECT 1 FROM faces f WHERE f.id = c.face_id)"
            ),
            "count_table_faces_off_by": one(
                "SELECT abs(coalesce(sum(n), 0) - (SELECT count(*) FROM faces)) FROM counts WHERE name LIKE 'model:%'"
            ),
            "count_table_subjects_off_by": one(
                "SELECT abs(coalesce(sum(n), 0) - (SELECT count(*) FROM subjects)) FROM counts WHERE name = 'subjects'"
            ),
        }


@dataclass
class Latencies:
    """Outcomes and seconds per request kind (thread-safe enough for asyncio and for CPython threads)."""

    kinds: Sequence[str]

    def __post_init__(self) -> None:
        self.status: dict[str, dict[str, int]] = {k: {} for k in self.kinds}
        self.seconds: dict[str, list[float]] = {k: [] for k in self.kinds}

    def record(self, kind: str, status: str, seconds: float) -> None:
        self.status[kind][status] = self.status[kind].get(status, 0) + 1
        self.seconds[kind].append(seconds)

    def table(self) -> dict[str, dict[str, Any]]:
        """Per kind: requests, status counts, p50/p99 in ms."""
        out = {}
        for k in self.kinds:
            s = np.array(self.seconds[k]) * 1e3
            out[k] = {
                "requests": len(s),
                "status": dict(sorted(self.status[k].items())),
                "p50_ms": round(float(np.percentile(s, 50)), 1) if len(s) else None,
                "p99_ms": round(float(np.percentile(s, 99)), 1) if len(s) else None,
            }
        return out


def pick_other(servers: Sequence[BenchServer], rng: random.Random) -> tuple[int, int]:
    """A random replica to write through and a different one to read from: ``(write, read)`` indexes."""
    w = rng.randrange(len(servers))
    return w, (w + 1 + rng.randrange(len(servers) - 1)) % len(servers)


def stamp() -> str:
    return time.strftime("%H:%M:%S")
