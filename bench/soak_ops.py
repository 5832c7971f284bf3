"""Helpers of ``bench/soak_mixed.py``: the test images (celebrity photos, PIL variations, a small video, bad
inputs), the shared client state, the checked request wrapper and the percentile/slope arithmetic."""

from __future__ import annotations

import io
import random
import tempfile
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from PIL import Image, ImageEnhance, ImageOps

# Every status the API documents (docs/API.md, "Errors"); a 2xx is fine; anything else, a 500 above all, is a defect.
DOCUMENTED = {401, 403, 404, 405, 409, 413, 415, 422, 429, 503, 507}
ANCHORED = ("ben_afflek", "elton_john", "madonna")  # enrolled once, never deleted; the other two only via clusters


def photos(root: Path) -> dict[str, list[bytes]]:
    """``{person: [jpeg bytes, ...]}`` of ``root/<person>/*``."""
    out: dict[str, list[bytes]] = {}
    for d in sorted(p for p in root.iterdir() if p.is_dir()):
        out[d.name] = [p.read_bytes() for p in sorted(d.iterdir()) if p.is_file()]
    return out


def variation(data: bytes, rng: random.Random) -> bytes:
    """A crop / resize / flip / rotation / brightness variation, JPEG at a random quality (a new sha256)."""
    img = Image.open(io.BytesIO(data)).convert("RGB")
    w, h = img.size
    f = rng.uniform(0.85, 1.0)
    cw, ch = int(w * f), int(h * f)
    x, y = rng.randint(0, w - cw), rng.randint(0, h - ch)
    img = img.crop((x, y, x + cw, y + ch))
    s = rng.uniform(0.6, 1.4)
    img = img.resize((max(32, int(cw * s)), max(32, int(ch * s))))
    if rng.random() < 0.5:
        img = ImageOps.mirror(img)
    if rng.random() < 0.3:
        img = img.rotate(rng.uniform(-10, 10), fillcolor=(128, 128, 128))
    img = ImageEnhance.Brightness(img).enhance(rng.uniform(0.8, 1.2))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=rng.randint(70, 95))
    return buf.getvalue()


def png(w: int, h: int, colour: tuple[int, int, int] = (90, 120, 150)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (w, h), colour).save(buf, "PNG")
    return buf.getvalue()


def make_video(pics: dict[str, list[bytes]], seconds: int = 4, fps: int = 10) -> bytes:
    """An mp4 (OpenCV, mp4v) of ``seconds`` celebrity photos, one a second, 320x320."""
    import cv2
    import numpy as np

    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "soak.mp4")
        out = cv2.VideoWriter(path, cv2.VideoWriter.fourcc(*"mp4v"), fps, (320, 320))
        people = sorted(pics)
        for i in range(seconds):
            img = Image.open(io.BytesIO(pics[people[i % len(people)]][0])).convert("RGB").resize((320, 320))
            frame = cv2.cvtColor(np.asarray(img), cv2.COLOR_RGB2BGR)
            for _ in range(fps):
                out.write(frame)
        out.release()
        return Path(path).read_bytes()


@dataclass
class State:
    """What the clients believe the server holds: every change counted only once the server acknowledged it."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    person: dict[str, str] = field(default_factory=dict)  # subject id -> person ("?" unknown), live subjects
    churn: list[str] = field(default_factory=list)  # live subjects the clients may enrol into and delete
    faces: dict[str, set[int]] = field(default_factory=lambda: defaultdict(set))  # subject -> acknowledged faces
    deleted: dict[str, float] = field(default_factory=dict)  # subject id -> time its deletion was acknowledged
    deleted_faces: set[int] = field(default_factory=set)  # gallery faces erased (alone or with their subject)
    uncertain: set[str] = field(default_factory=set)  # a change to it timed out: its state is unknown
    photo_faces: dict[int, str] = field(default_factory=dict)  # photo face id -> person
    photos: dict[str, list[int]] = field(default_factory=dict)  # live photo id -> its face ids
    erased_photo_faces: set[int] = field(default_factory=set)
    videos: list[str] = field(default_factory=list)
    video_tracks: list[int] = field(default_factory=list)  # tracks of each video job that finished


@dataclass
class Stats:
    lock: threading.Lock = field(default_factory=threading.Lock)
    latency: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    status: dict[str, dict[str, int]] = field(default_factory=lambda: defaultdict(lambda: defaultdict(int)))
    defects: list[dict[str, Any]] = field(default_factory=list)  # 5xx (not 503/507), undocumented status, bad envelope
    unexpected: list[dict[str, Any]] = field(default_factory=list)  # documented, but not what this request should get
    hung: list[dict[str, Any]] = field(default_factory=list)
    total: int = 0

    def note(self, bucket: list[dict[str, Any]], item: dict[str, Any]) -> None:
        with self.lock:
            if len(bucket) < 200:
                bucket.append(item)


class Api:
    """One client thread's connection: every request timed, its status counted and its error envelope checked."""

    def __init__(self, url: str, key: str, stats: Stats, timeout_s: float = 60.0) -> None:
        self.http = httpx.Client(base_url=url, headers={"X-API-Key": key}, timeout=timeout_s)
        self.stats = stats

    def __call__(
        self, kind: str, method: str, path: str, expect: set[int] | None = None, **kw: Any
    ) -> httpx.Response | None:
        t0 = time.monotonic()
        try:
            r = self.http.request(method, path, **kw)
        except httpx.TimeoutException as e:
            self.stats.note(self.stats.hung, {"kind": kind, "method": method, "path": path, "error": repr(e)})
            self._count(kind, "timeout", time.monotonic() - t0)
            return None
        except httpx.HTTPError as e:
            self.stats.note(self.stats.defects, {"kind": kind, "method": method, "path": path, "error": repr(e)})
            self._count(kind, "transport", time.monotonic() - t0)
            return None
        self._count(kind, str(r.status_code), time.monotonic() - t0)
        item = {"kind": kind, "method": method, "path": path, "status": r.status_code, "body": r.text[:300]}
        if not r.is_success and (r.status_code not in DOCUMENTED or not self._envelope(r, method)):
            self.stats.note(self.stats.defects, item)
            return r
        if expect is not None and r.status_code not in expect:
            self.stats.note(self.stats.unexpected, item)
        return r

    @staticmethod
    def _envelope(r: httpx.Response, method: str) -> bool:
        if method == "HEAD":
            return True
        try:
            err = r.json()["error"]
            return isinstance(err["code"], str) and isinstance(err["message"], str)
        except (ValueError, KeyError, TypeError):
            return False

    def _count(self, kind: str, status: str, seconds: float) -> None:
        with self.stats.lock:
            self.stats.latency[kind].append(seconds)
            self.stats.status[kind][status] += 1
            self.stats.total += 1


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    return s[min(len(s) - 1, round(q / 100.0 * (len(s) - 1)))]


def slope(xs: list[float], ys: list[float]) -> float | None:
    """Least-squares slope of ys over xs (None for fewer than 3 points or no spread)."""
    n = len(xs)
    if n < 3:
        return None
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    return None if sxx == 0 else sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx


def proc_sample(pid: int) -> dict[str, int]:
    """VmRSS (KiB), open fds and threads of ``pid`` from /proc."""
    out = {"fds": len(list(Path(f"/proc/{pid}/fd").iterdir()))}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            out["rss_kib"] = int(line.split()[1])
        elif line.startswith("Threads:"):
            out["threads"] = int(line.split()[1])
    return out


def all_pages(api: Api, kind: str, path: str, limit: int, **params: Any) -> list[dict[str, Any]] | None:
    """Every item of a cursor-paged listing (None when a page failed)."""
    items: list[dict[str, Any]] = []
    cursor: str | None = None
    for _ in range(10_000):
        q = {"limit": limit, **params, **({"cursor": cursor} if cursor else {})}
        r = api(kind, "GET", path, {200}, params=q)
        if r is None or r.status_code != 200:
            return None
        body = r.json()
        items += body["items"]
        cursor = body.get("next_cursor")
        if not cursor:
            return items
    return None
