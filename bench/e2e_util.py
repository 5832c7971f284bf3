"""Helpers of the end-to-end benchmark (``bench/e2e.py``): the timing lock, RSS, latency spreads, results."""

from __future__ import annotations

import contextlib
import fcntl
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from bench.paths import REPORTS

TIMED_LOCK = REPORTS / "timed.lock"


def vm(pid: int | str = "self", key: str = "VmRSS") -> float:
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
    TIMED_LOCK.parent.mkdir(parents=True, exist_ok=True)
    with open(TIMED_LOCK, "a") as fh:
        t = time.monotonic()
        fcntl.flock(fh, fcntl.LOCK_EX)
        print(f"[{time.strftime('%H:%M:%S')}] lock for {what} (waited {time.monotonic() - t:.0f} s)", flush=True)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


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


def write_result(out: Path, key: str, value: Any) -> None:
    """Merge ``{key: value}`` into the JSON file ``out``."""
    data = json.loads(out.read_text()) if out.exists() else {}
    data[key] = value
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(data, indent=1) + "\n")
