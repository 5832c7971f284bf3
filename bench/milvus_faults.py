"""Faults: the real Milvus server (2.3.5 standalone, service/devmilvus.py) stopped and restarted under mixed load
from two replicas (``MilvusGallery`` on one PostgreSQL), with every answer checked.

    python bench/milvus_faults.py --signal KILL --out reports/milvus-faults-kill.json
    python bench/milvus_faults.py --signal TERM --out reports/milvus-faults-term.json

Load (threads, for the whole run): enrolments (one face per call, replica A), erasures of acknowledged faces
(replica B) and searches by an acknowledged face's own vector (both replicas). ``--signal`` stops the server
(``TERM``: Milvus's graceful stop, ``INT``: the ``milvus-server`` wrapper's stop, ``KILL``: a crash) after
``--warmup`` seconds, keeps it down ``--down`` seconds and starts it again on the same data dir. Checked:

- ``lost_reads``: a search that began after a face was acknowledged (and before any erasure of it began) that did
  not return it first; ``lost_final``: acknowledged, never erased, not found after the run;
- ``erased_returned``: a search that began after an erasure returned that still returned the face (during the run
  and after it);
- ``refused_stored``: an enrolment answered ``VectorIndexUnavailable`` (503) whose face is searchable afterwards;
- ``reconcile_differences`` once the outbox is drained. All must be 0. Also reported: 503s per kind of call and
  seconds from the restart until the first successful search.
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from service.devdb import DevCluster
from service.devmilvus import MilvusServer, running_server
from service.gallery import NewFace
from service.gallery.errors import VectorIndexUnavailable
from service.gallery.milvus import MilvusGallery, MilvusOptions, open_milvus
from service.gallery.milvus.reconcile import reconcile
from service.gallery.postgres import PoolOptions

MODEL = "faults-model"


@dataclass
class Outcome:
    """Counts of one run; the five after ``recovery_s`` must be 0 (see the module's docstring)."""

    recovery_s: float = -1.0
    """Seconds from the restart until the first successful search."""
    lost_reads: int = 0
    """Searches that missed a face acknowledged before they began."""
    lost_final: int = 0
    erased_returned: int = 0
    """Searches, during the run or after it, that returned a face erased before they began."""
    refused_stored: int = 0
    reconcile_differences: int = -1
    """-1 until reconcile ran."""
    enrolled: int = 0
    erased: int = 0
    searches: int = 0
    unavailable: dict[str, int] = field(default_factory=lambda: {"enrol": 0, "erase": 0, "search": 0})
    other_errors: list[str] = field(default_factory=list)

    @property
    def violations(self) -> int:
        return (
            self.lost_reads + self.lost_final + self.erased_returned + self.refused_stored + self.reconcile_differences
        )


class MixedLoad:
    """Enrol / erase / search threads over replicas ``a`` and ``b``, recording what was acknowledged when."""

    def __init__(self, a: MilvusGallery, b: MilvusGallery, seed: int = 7) -> None:
        self.a, self.b = a, b
        self.rng = np.random.default_rng(seed)
        self.lock = threading.Lock()
        self.acked: dict[int, tuple[np.ndarray, float]] = {}
        self.erasing: dict[int, float] = {}  # face id -> when its erasure began
        self.erased: dict[int, float] = {}  # face id -> when its erasure returned
        self.refused: list[np.ndarray] = []
        self.out = Outcome()
        self.stop = threading.Event()
        self.subjects = [s.id for s in a.create_subjects([(f"s{i}", None) for i in range(50)])]

    def _vec(self) -> np.ndarray:
        with self.lock:
            v = self.rng.standard_normal(128).astype(np.float32)
        return (v / np.linalg.norm(v)).astype(np.float32)

    def enrol_one(self) -> None:
        v = self._vec()
        try:
            [rec] = self.a.add_faces(random.choice(self.subjects), [NewFace(embedding=v, model_id=MODEL)])
        except VectorIndexUnavailable:
            with self.lock:
                self.out.unavailable["enrol"] += 1
                self.refused.append(v)
            return
        with self.lock:
            self.acked[rec.id] = (v, time.monotonic())
            self.out.enrolled += 1

    def erase_one(self) -> None:
        with self.lock:
            live = [f for f in self.acked if f not in self.erasing]
            if not live:
                return
            fid = random.choice(live)
            self.erasing[fid] = time.monotonic()
        self.b.delete_face(fid)  # PostgreSQL only (then a best-effort drain): works while Milvus is down
        with self.lock:
            self.erased[fid] = time.monotonic()
            self.out.erased += 1

    def search_one(self, g: MilvusGallery) -> None:
        with self.lock:
            if not self.acked:
                return
            fid = random.choice(list(self.acked))
            v, _ = self.acked[fid]
        began = time.monotonic()
        try:
            got = g.search(v[None], model_id=MODEL, top_k=1)[0]
        except VectorIndexUnavailable:
            with self.lock:
                self.out.unavailable["search"] += 1
            return
        top = got[0].face_id if got else None
        with self.lock:
            self.out.searches += 1
            if fid in self.erased and self.erased[fid] < began and top == fid:
                self.out.erased_returned += 1
            elif fid not in self.erasing and self.acked[fid][1] < began and top != fid:
                self.out.lost_reads += 1

    def _loop(self, fn: Callable[[], None], pause_s: float) -> None:
        while not self.stop.is_set():
            try:
                fn()
            except Exception as e:  # anything but a 503 is a finding: record it, keep loading
                with self.lock:
                    self.out.other_errors.append(f"{type(e).__name__}: {str(e)[:200]}")
            time.sleep(pause_s)

    def start(self) -> list[threading.Thread]:
        jobs: list[tuple[Callable[[], None], float]] = [
            (self.enrol_one, 0.02),
            (self.erase_one, 0.1),
            (lambda: self.search_one(self.a), 0.01),
            (lambda: self.search_one(self.b), 0.01),
        ]
        threads = [threading.Thread(target=self._loop, args=job, daemon=True) for job in jobs]
        for t in threads:
            t.start()
        return threads

    def finish(self, threads: list[threading.Thread], settle_s: float = 120.0) -> Outcome:
        """Stop the load, wait for the outbox to drain, then check every face once more and reconcile."""
        self.stop.set()
        for t in threads:
            t.join(timeout=60)
        deadline = time.monotonic() + settle_s
        while self.a.pending() and time.monotonic() < deadline:
            time.sleep(0.5)
        kept = [f for f in self.acked if f not in self.erasing]
        gone = list(self.erased)
        for ids, expect in ((kept, True), (gone, False)):
            for s in range(0, len(ids), 200):
                chunk = ids[s : s + 200]
                got = self.b.search(np.stack([self.acked[f][0] for f in chunk]), model_id=MODEL, top_k=1)
                for f, row in zip(chunk, got, strict=True):
                    hit = bool(row) and row[0].face_id == f
                    if expect and not hit:
                        self.out.lost_final += 1
                    if not expect and hit:
                        self.out.erased_returned += 1
        for s in range(0, len(self.refused), 200):
            got = self.b.search(np.stack(self.refused[s : s + 200]), model_id=MODEL, top_k=1)
            self.out.refused_stored += sum(1 for row in got if row and row[0].distance < 1e-4)
        self.out.reconcile_differences = reconcile(self.a).differences
        return self.out


def first_search_s(g: MilvusGallery, probe: np.ndarray, timeout_s: float = 180.0) -> float:
    """Seconds until a search succeeds (the service resuming by itself)."""
    t = time.monotonic()
    while time.monotonic() - t < timeout_s:
        try:
            g.search(probe[None], model_id=MODEL, top_k=1)
            return time.monotonic() - t
        except VectorIndexUnavailable:
            time.sleep(0.2)
    return -1.0


def fault_run(
    server: MilvusServer,
    a: MilvusGallery,
    b: MilvusGallery,
    sig: signal.Signals,
    warmup_s: float,
    down_s: float,
    after_s: float,
) -> Outcome:
    """Preload, load, stop the server with ``sig``, restart it after ``down_s``, load ``after_s`` more, check."""
    load = MixedLoad(a, b)
    for _ in range(100):
        load.enrol_one()
    threads = load.start()
    time.sleep(warmup_s)
    server.stop(sig, child_only=sig != signal.SIGINT)
    time.sleep(down_s)
    t = time.monotonic()
    server.start(timeout_s=150)
    started = time.monotonic() - t
    load.out.recovery_s = round(started + first_search_s(b, load._vec()), 1)
    time.sleep(after_s)
    return load.finish(threads)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--signal", choices=["INT", "TERM", "KILL"], default="KILL")
    p.add_argument("--warmup", type=float, default=15.0)
    p.add_argument("--down", type=float, default=5.0)
    p.add_argument("--after", type=float, default=15.0)
    p.add_argument("--out", default="reports/milvus-faults.json")
    args = p.parse_args()
    sig = getattr(signal, f"SIG{args.signal}")
    cluster = DevCluster(Path(tempfile.mkdtemp(prefix="facerec-milvus-faults-pg-")))
    cluster.start()
    result: dict[str, Any] = {"signal": args.signal, "warmup_s": args.warmup, "down_s": args.down}
    try:
        url = cluster.create_database("faults", owner="facerec")
        with running_server() as server:
            opts = MilvusOptions(uri=server.uri, timeout_s=3.0)
            dbs = [open_milvus(url, opts, pool=PoolOptions(min_size=1, max_size=4), sync_interval_s=0.5) for _ in "ab"]
            a, b = (db.gallery for db in dbs)
            assert isinstance(a, MilvusGallery) and isinstance(b, MilvusGallery)
            try:
                out = fault_run(server, a, b, sig, args.warmup, args.down, args.after)
            finally:
                for db in dbs:
                    db.close()
    finally:
        cluster.destroy()
    result.update(asdict(out), violations=out.violations)
    result["other_errors"] = out.other_errors[:20]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    sys.exit(1 if out.violations or out.other_errors else 0)


if __name__ == "__main__":
    main()
