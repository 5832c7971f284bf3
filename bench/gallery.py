"""Gallery benchmarks: scale (synthetic clustered unit vectors) and open-set calibration (real LFW).

    python bench/gallery.py scale --sizes 10000,100000 --out reports/gallery-bench.json
    python bench/gallery.py scale --sizes 1000000 --out reports/gallery-1m.json
    python bench/gallery.py lfw --npz reports/lfw_embeddings.npz --out reports/gallery-lfw.json

``scale``, per size N, through the real gallery (SQLite + FAISS) in a fresh data dir: bulk add (subjects and
faces in transactions of 10k faces; the HNSW build is *not* included and is timed separately), single-probe
query latency on one thread (``gallery.search(probe, top_k=5)``: FAISS + grouping by subject + names from
SQLite), recall@1 of the face returned against exact brute force, an efSearch sweep, snapshot save time and
size, and cold start (``open_gallery`` from the snapshot in a fresh process, with that process's max RSS).
Synthetic faces: N/10 identities, unit centres in 128-d, each face = normalise(centre + 0.7 * g / sqrt(128)),
so same-identity distances are ~0.8 and different ~1.4, like FaceNet on LFW, but isotropic (all 128 dimensions
used alike: the hard case for approximate search). ``Synthetic(..., shape=fit_shape(npz))`` draws instead with
the covariance structure of real embeddings (bench/faceshape.py).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import numpy.typing as npt

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.faceshape import FaceShape
from service.gallery import GallerySettings, IndexParams, NewFace, open_gallery

MODEL = "facenet-20170512-110547"
PER_ID = 10
NOISE = 0.7
CHUNK = 10_000


def max_rss_mb() -> float:
    """Peak RSS of this process image in MiB (``VmHWM``; ``ru_maxrss`` would inherit the parent's peak)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024.0
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _normalise(x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


class Synthetic:
    """Deterministic clustered unit vectors, generated chunk by chunk (never all in memory): isotropic, or with
    ``shape`` the covariance structure of real embeddings."""

    def __init__(self, n: int, seed: int = 0, shape: FaceShape | None = None) -> None:
        self.n = n
        self.seed = seed
        self.shape = shape
        self.ids = (n + PER_ID - 1) // PER_ID
        rng = np.random.default_rng([seed, 1])
        if shape is None:
            self.centres = _normalise(rng.standard_normal((self.ids, 128), np.float32))
        else:
            self.centres = shape.centres(rng, self.ids)

    def _noise(self, rng: np.random.Generator, count: int) -> npt.NDArray[np.float32]:
        if self.shape is not None:
            return self.shape.noise(rng, count)
        return rng.standard_normal((count, 128), np.float32) * (NOISE / np.sqrt(128))

    @property
    def generator(self) -> str:
        """What drew the faces, for reports."""
        return "isotropic" if self.shape is None else f"shape of {self.shape.source}"

    def chunks(self) -> Iterator[tuple[int, npt.NDArray[np.float32]]]:
        """``(first face index, faces)``; face ``f`` belongs to identity ``f // PER_ID``."""
        for i, start in enumerate(range(0, self.n, CHUNK)):
            stop = min(self.n, start + CHUNK)
            rng = np.random.default_rng([self.seed, 2, i])
            yield start, _normalise(self.centres[np.arange(start, stop) // PER_ID] + self._noise(rng, stop - start))

    def probes(self, count: int) -> npt.NDArray[np.float32]:
        """New faces of enrolled identities (not themselves in the gallery)."""
        rng = np.random.default_rng([self.seed, 3])
        who = rng.integers(0, self.ids, count)
        self.probe_identities = who
        return _normalise(self.centres[who] + self._noise(rng, count))

    def exact_nearest(
        self, probes: npt.NDArray[np.float32], erased: npt.NDArray[np.bool_] | None = None
    ) -> npt.NDArray[np.int64]:
        """Index of each probe's nearest face (not ``erased``, a mask over faces) by brute force."""
        best = np.full(len(probes), -np.inf, np.float32)
        arg = np.zeros(len(probes), np.int64)
        for start, x in self.chunks():
            sim = probes @ x.T
            if erased is not None:
                sim[:, erased[start : start + len(x)]] = -np.inf
            j = sim.argmax(axis=1)
            s = sim[np.arange(len(probes)), j]
            better = s > best
            best[better] = s[better]
            arg[better] = start + j[better]
        return arg


def add_synthetic(g: Any, syn: Synthetic, subjects: list[Any]) -> npt.NDArray[np.int64]:
    """Add every face of ``syn`` with ``add_faces_many`` (one call per chunk), face ``f`` into ``subjects[f //
    PER_ID]`` (made by ``create_subjects``, one per identity); returns the face ids, in order."""
    face_ids = np.zeros(syn.n, np.int64)
    for start, x in syn.chunks():
        batch: dict[str, list[NewFace]] = {}
        for k, v in enumerate(x):
            batch.setdefault(subjects[(start + k) // PER_ID].id, []).append(NewFace(v, MODEL))
        recs = g.add_faces_many(batch)
        face_ids[start : start + len(recs)] = [r.id for r in recs]
    return face_ids


def _latency(g: Any, probes: npt.NDArray[np.float32]) -> dict[str, float]:
    faiss.omp_set_num_threads(1)
    return search_latency(g, probes)


def search_latency(g: Any, probes: npt.NDArray[np.float32]) -> dict[str, float]:
    """One-probe top-5 search latency of any gallery (also the PostgreSQL and Milvus benches'): 20 warm-up
    searches, then every probe timed; p50/p99 in ms."""
    for p in probes[:20]:
        g.search(p[None], model_id=MODEL, top_k=5)
    times = []
    for p in probes:
        t = time.perf_counter()
        g.search(p[None], model_id=MODEL, top_k=5)
        times.append(time.perf_counter() - t)
    ms = np.array(times) * 1e3
    return {"p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)), "n": len(ms)}


def _recall(g: Any, probes: npt.NDArray[np.float32], exact: tuple[Any, Any]) -> dict[str, float]:
    """Face recall@1 (the face returned is the exact nearest face) and subject recall@1 (the top subject is
    the subject of the exact nearest face)."""
    exact_faces, exact_subjects = exact
    faiss.omp_set_num_threads(1)
    res = g.search(probes, model_id=MODEL, top_k=1)
    faces = np.array([r[0].face_id for r in res])
    subjects = np.array([r[0].subject_id for r in res])
    return {
        "recall_at_1": float(np.mean(faces == exact_faces)),
        "subject_recall_at_1": float(np.mean(subjects == exact_subjects)),
    }


def size_header(syn: Synthetic, args: argparse.Namespace) -> dict[str, Any]:
    """The head of a size's report: faces, identities and the HNSW build parameters (``args.m``,
    ``args.ef_construction``); also the PostgreSQL bench's."""
    return {
        "faces": syn.n,
        "identities": syn.ids,
        "generator": syn.generator,
        "M": args.m,
        "ef_construction": args.ef_construction,
    }


def bench_size(n: int, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    data = work / f"n{n}"
    shutil.rmtree(data, ignore_errors=True)
    syn = Synthetic(n, args.seed)
    out = size_header(syn, args) | {"hnsw_threshold": args.hnsw_threshold}
    last = [0.0]

    def progress(stage: str, done: int, total: int) -> None:
        if time.monotonic() - last[0] > 30 or done == total:
            last[0] = time.monotonic()
            print(f"  [{time.strftime('%H:%M:%S')}] {stage}: {done}/{total}", flush=True)

    index = IndexParams(
        hnsw_threshold=args.hnsw_threshold,
        hnsw_m=args.m,
        ef_construction=args.ef_construction,
        ef_search=args.ef_search,
    )
    g = open_gallery(data, GallerySettings(index=index), auto_maintain=False, progress=progress)
    faiss.omp_set_num_threads(args.build_threads)
    t = time.perf_counter()
    subjects = g.create_subjects([(f"id{i}", None) for i in range(syn.ids)])
    out["create_subjects_s"] = time.perf_counter() - t
    t = time.perf_counter()
    face_ids = add_synthetic(g, syn, subjects)
    add_s = time.perf_counter() - t
    out["bulk_add_s"] = add_s
    out["bulk_add_faces_per_s"] = n / add_s
    print(f"  bulk add: {n} faces in {add_s:.1f} s = {n / add_s:,.0f} faces/s (SQLite + flat index)", flush=True)

    probes = syn.probes(args.probes)
    t = time.perf_counter()
    nearest = syn.exact_nearest(probes)
    exact_all = (face_ids[nearest], np.array([subjects[i // PER_ID].id for i in nearest]))
    out["exact_ground_truth_s"] = time.perf_counter() - t
    flat_probes = probes[: args.flat_probes if n > 200_000 else len(probes)]
    out["flat"] = _latency(g, flat_probes)
    out["flat"].update(_recall(g, flat_probes, (exact_all[0][: len(flat_probes)], exact_all[1][: len(flat_probes)])))
    print(f"  flat query: {out['flat']}", flush=True)

    if n >= args.hnsw_threshold:
        faiss.omp_set_num_threads(args.build_threads)
        t = time.perf_counter()
        g.maintain()
        out["hnsw_build_s"] = time.perf_counter() - t
        print(f"  HNSW build: {out['hnsw_build_s']:.1f} s ({args.build_threads} threads)", flush=True)
        sweep = {}
        for ef in args.ef_sweep:
            g.set_ef_search(ef)
            lat = _latency(g, probes[: min(len(probes), 1000)])
            lat.update(_recall(g, probes, exact_all))
            sweep[str(ef)] = lat
            print(f"  HNSW efSearch={ef}: {lat}", flush=True)
        out["hnsw_ef_sweep"] = sweep
        g.set_ef_search(args.ef_search)
        out["hnsw"] = _latency(g, probes)
        out["hnsw"].update(_recall(g, probes, exact_all))
        out["hnsw"]["ef_search"] = args.ef_search
        print(f"  HNSW query (efSearch={args.ef_search}): {out['hnsw']}", flush=True)
        if args.erase_fraction > 0:
            out["after_erasure"] = _erase_and_measure(g, syn, subjects, face_ids, probes, args.erase_fraction)
    out["index_kind"] = g.stats().indexes[MODEL].kind
    t = time.perf_counter()
    g.close()  # saves the snapshot
    out["close_with_snapshot_s"] = time.perf_counter() - t
    snaps = list((data / "index").glob("*.snap"))
    out["snapshot_mb"] = sum(p.stat().st_size for p in snaps) / 2**20
    out["sqlite_mb"] = sum(p.stat().st_size for p in data.glob("gallery.sqlite3*")) / 2**20
    out["bench_process_max_rss_mb"] = max_rss_mb()
    cold = subprocess.run(
        [
            sys.executable,
            __file__,
            "cold-start",
            str(data),
            "--ef-search",
            str(args.ef_search),
            "--faces",
            str(0 if args.erase_fraction else n),  # after erasures face ids no longer follow the data
            "--probes",
            str(args.probes),
            "--seed",
            str(args.seed),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    out["cold_start"] = json.loads(cold.stdout.strip().splitlines()[-1])
    print(f"  cold start: {out['cold_start']}", flush=True)
    if not args.keep:
        shutil.rmtree(data, ignore_errors=True)
    return out


def _erase_and_measure(
    g: Any, syn: Synthetic, subjects: list[Any], face_ids: npt.NDArray[np.int64], probes: Any, fraction: float
) -> dict[str, Any]:
    """Erase a random ``fraction`` of the subjects (tombstones in HNSW, below the compaction ratio), then
    measure recall against exact search over the faces left, latency, and that no erased face comes back."""
    rng = np.random.default_rng(7)
    victims = rng.choice(syn.ids, int(fraction * syn.ids), replace=False)
    t = time.perf_counter()
    for v in victims:
        g.delete_subject(subjects[v].id)
    erase_s = time.perf_counter() - t
    erased = np.zeros(syn.n, bool)
    for v in victims:
        erased[v * PER_ID : (v + 1) * PER_ID] = True
    nearest = syn.exact_nearest(probes, erased)
    exact = (face_ids[nearest], np.array([subjects[i // PER_ID].id for i in nearest]))
    res: dict[str, Any] = {
        "erased_subjects": len(victims),
        "erased_faces": int(erased.sum()),
        "delete_subject_ms": erase_s / len(victims) * 1e3,
        "tombstones": g.stats().indexes[MODEL].tombstones,
    }
    res.update(_latency(g, probes[:1000]))
    res.update(_recall(g, probes, exact))
    own_left = ~np.isin(syn.probe_identities, victims)  # probes whose own identity is still enrolled
    for name, sel in (("probes_enrolled", own_left), ("probes_erased", ~own_left)):
        r = _recall(g, probes[sel], (exact[0][sel], exact[1][sel]))
        res[name] = {"n": int(sel.sum()), **r}
    got = {c.face_id for row in g.search(probes, model_id=MODEL, top_k=10) for c in row}
    res["erased_faces_returned"] = len(got & set(face_ids[erased].tolist()))
    if syn.n > 200_000:  # a compaction is a full HNSW rebuild (~8 min at 1M): measured at 100k
        return res
    t = time.perf_counter()
    g.compact()  # what the automatic compaction (at 10 % tombstones) would give
    res["compact_s"] = time.perf_counter() - t
    after: dict[str, Any] = _recall(g, probes, exact)
    for name, sel in (("probes_enrolled", own_left), ("probes_erased", ~own_left)):
        after[name] = _recall(g, probes[sel], (exact[0][sel], exact[1][sel]))
    after.update(_latency(g, probes[:1000]))
    res["after_compaction"] = after
    print(f"  after erasing {fraction:.0%} of subjects: {res}", flush=True)
    return res


def cold_start(args: argparse.Namespace) -> None:
    """In a fresh process: time ``open_gallery`` from the snapshot, then (with ``--faces``) the serving
    figures: single-probe latency on one thread, recall@1 against brute force on the same synthetic data."""
    t0 = time.perf_counter()
    g = open_gallery(Path(args.data), GallerySettings(index=IndexParams(ef_search=args.ef_search)), auto_maintain=False)
    open_s = time.perf_counter() - t0
    st = g.stats()
    out: dict[str, Any] = {
        "open_s": open_s,
        "faces": st.faces,
        "index_kind": st.indexes[MODEL].kind,
        "rebuilt_from_sqlite": not st.snapshots,
        "rss_after_open_mb": max_rss_mb(),
        "ef_search": args.ef_search,
    }
    if args.faces:
        syn = Synthetic(args.faces, args.seed)
        probes = syn.probes(args.probes)
        out["latency"] = _latency(g, probes)
        out["rss_after_queries_mb"] = max_rss_mb()
        nearest = syn.exact_nearest(probes)  # face f has id f + 1 in the bench's fresh database
        sids = [r[0] for r in g.store._reader().execute("SELECT id FROM subjects ORDER BY pk")]
        out["latency"].update(_recall(g, probes, (nearest + 1, np.array([sids[i // PER_ID] for i in nearest]))))
    g.close()  # the snapshot is current, so nothing is written
    print(json.dumps(out))


def scale(args: argparse.Namespace) -> None:
    work = Path(args.workdir or tempfile.mkdtemp(prefix="gallery-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "cpu_count": os.cpu_count(),
        "faiss": faiss.__version__,
        "sizes": [],
    }
    for n in args.sizes:
        print(f"== {n:,} faces ==", flush=True)
        results["sizes"].append(bench_size(n, args, work))
        Path(args.out).write_text(json.dumps(results, indent=2))
    print()
    print(
        f"{'faces':>9} {'add/s':>9} {'flat p50':>9} {'flat p99':>9} {'hnsw p50':>9} {'hnsw p99':>9} "
        f"{'recall@1':>8} {'subj r@1':>8} {'build s':>8} {'cold s':>7} {'RSS MB':>7}"
    )
    nan = float("nan")
    for r in results["sizes"]:
        h = r.get("hnsw", {})
        cold = r["cold_start"]
        print(
            f"{r['faces']:>9,} {r['bulk_add_faces_per_s']:>9,.0f} {r['flat']['p50_ms']:>9.3f} "
            f"{r['flat']['p99_ms']:>9.3f} {h.get('p50_ms', nan):>9.3f} {h.get('p99_ms', nan):>9.3f} "
            f"{h.get('recall_at_1', r['flat']['recall_at_1']):>8.4f} "
            f"{h.get('subject_recall_at_1', r['flat']['subject_recall_at_1']):>8.4f} "
            f"{r.get('hnsw_build_s', 0):>8.1f} "
            f"{cold['open_s']:>7.2f} {cold.get('rss_after_queries_mb', cold['rss_after_open_mb']):>7.0f}"
        )
    print(f"\nwrote {args.out}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    sc = sub.add_parser("scale", help="synthetic scale benchmark through the real gallery")
    sc.add_argument("--sizes", type=lambda s: [int(x) for x in s.split(",")], default=[10_000, 100_000])
    sc.add_argument("--out", required=True)
    sc.add_argument("--workdir", default=None)
    sc.add_argument("--probes", type=int, default=2000)
    sc.add_argument("--flat-probes", type=int, default=200, help="probes for flat latency above 200k faces")
    sc.add_argument("--hnsw-threshold", type=int, default=50_000)
    sc.add_argument("--m", type=int, default=32)
    sc.add_argument("--ef-construction", type=int, default=80)
    sc.add_argument("--ef-search", type=int, default=128)
    sc.add_argument("--ef-sweep", type=lambda s: [int(x) for x in s.split(",")], default=[16, 32, 48, 64, 96, 128])
    sc.add_argument("--build-threads", type=int, default=2)
    sc.add_argument("--seed", type=int, default=0)
    sc.add_argument("--erase-fraction", type=float, default=0.0, help="then erase this share of subjects")
    sc.add_argument("--keep", action="store_true", help="keep the data dirs")
    cs = sub.add_parser("cold-start", help=argparse.SUPPRESS)
    cs.add_argument("data")
    cs.add_argument("--ef-search", type=int, default=128)
    cs.add_argument("--faces", type=int, default=0, help="the synthetic size, to measure latency and recall")
    cs.add_argument("--probes", type=int, default=2000)
    cs.add_argument("--seed", type=int, default=0)
    lf = sub.add_parser("lfw", help="open-set FIR vs gallery size and HNSW recall on real LFW embeddings")
    lf.add_argument("--npz", default="reports/lfw_embeddings.npz")
    lf.add_argument("--out", required=True)
    lf.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if args.cmd == "scale":
        scale(args)
    elif args.cmd == "cold-start":
        cold_start(args)
    else:
        from gallery_lfw import lfw  # sibling module (bench/ is on sys.path when run as a script)

        lfw(args)


if __name__ == "__main__":
    main()
