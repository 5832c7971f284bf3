"""Where an idle server's resident memory goes (issue 6: "RSS at idle <= 1.5 GB" with a 1M-face gallery).

Subcommands (run from the repository root with the project's venv, ``FACEREC_CACHE`` set; memory figures are
not timing-sensitive, run them at ``nice -n 19``):

``smaps``   start ``facerec serve`` on ``--data`` (loopback, a subprocess; ``--server-repo`` runs another checkout
            of the code, e.g. an export of an older commit, for a side-by-side run), wait for ``/readyz``
            (``ready_s``: spawn to ready, the cold start), send ``--identify`` sequential ``/v1/identify``
            requests with ``--image`` (default: the first 5-celebrity ``val`` photo), wait ``--settle``
            seconds, then group ``/proc/<pid>/smaps`` by mapping: the shared libraries of
            TensorFlow, OpenVINO, FAISS, Python/numpy/others, the heap, anonymous memory, thread stacks;
            ``tensorflow_loaded`` says whether any TensorFlow library is mapped.
            Anonymous memory cannot be attributed to a library from smaps alone, hence:
``stages``  the server's start-up steps one by one in this process (imports, open the gallery, load and warm
            the analyzer), RSS after each, and the FAISS index's own byte count per segment.
``recall``  what a memory lever costs in accuracy: open the gallery with ``--storage`` (an HNSW snapshot of the
            other storage is converted in memory), and compare ``gallery.search`` with exact float32 search
            over every face in SQLite for three probe sets: the held-out LFW images of ``bench/e2e.py build``
            (real embeddings, people in the gallery), new faces of enrolled synthetic identities, and
            strangers (synthetic identities not in the gallery). Recall@1 (face, and subject), the top-1
            distance error, and how often the open-set decision at ``--thresholds`` differs.
``latency`` single-probe ``gallery.search(top_k=5)`` latency on one FAISS thread (take the timed lock).

All figures are MiB (2**20 bytes). ``--out`` appends the result as JSON under ``--label``.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.paths import REPORTS  # noqa: E402

MIB = float(1 << 20)


def rss_mib(pid: int | str = "self") -> float:
    """``VmRSS`` of ``pid`` in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


_HEADER = re.compile(r"^[0-9a-f]+-[0-9a-f]+ ")


def _category(path: str) -> str:
    low = path.lower()
    if not path:
        return "anonymous"
    if path == "[heap]":
        return "heap"
    if path.startswith("[stack"):
        return "main stack"
    if path.startswith("["):
        return "other special"
    for name in ("openvino", "tensorflow", "faiss", "cv2", "opencv", "numpy", "scipy", "sqlite", "python"):
        if name in low:
            return f"file: {name}"
    return "file: other"


def smaps_breakdown(pid: int) -> dict[str, Any]:
    """Resident MiB per mapping category of ``pid``, plus the largest anonymous mappings and thread count."""
    cats: dict[str, float] = {}
    anon_sizes: list[float] = []
    stacks = 0.0
    current = ""
    size_kb = 0
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        if _HEADER.match(line):
            parts = line.split(None, 5)
            current = parts[5].strip() if len(parts) > 5 else ""
        elif line.startswith("Size:"):
            size_kb = int(line.split()[1])
        elif line.startswith("Rss:"):
            rss = int(line.split()[1]) / 1024.0
            cat = _category(current)
            # glibc thread stacks are anonymous mappings of exactly 8 MiB (+ a guard page elsewhere)
            if cat == "anonymous" and size_kb in (8192, 8188):
                stacks += rss
                cat = "thread stacks (8 MiB mappings)"
            cats[cat] = cats.get(cat, 0.0) + rss
            if cat == "anonymous":
                anon_sizes.append(rss)
    threads = len(os.listdir(f"/proc/{pid}/task"))
    anon_sizes.sort(reverse=True)
    return {
        "rss_mib": round(rss_mib(pid), 1),
        "threads": threads,
        "by_category_mib": {k: round(v, 1) for k, v in sorted(cats.items(), key=lambda kv: -kv[1])},
        "largest_anonymous_mib": [round(x, 1) for x in anon_sizes[:12]],
    }


def cmd_smaps(args: argparse.Namespace) -> dict[str, Any]:
    import subprocess

    import httpx

    from bench.serverproc import free_port, serve_command, stop, wait_ready

    port = free_port()
    repo = Path(args.server_repo).resolve() if args.server_repo else REPO
    env = {**os.environ, "PYTHONPATH": str(repo), "TF_CPP_MIN_LOG_LEVEL": "2"}
    env.update(dict(kv.split("=", 1) for kv in args.server_env))

    def keys(*argv: str) -> str:
        """``facerec keys ...`` of the server's checkout, in the server's environment (its key store)."""
        cmd = [sys.executable, "-m", "service.cli", "keys", *argv, "--data", str(args.data)]
        return subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True, check=True).stdout

    # a data dir with active API keys (e.g. one bench/e2e.py served) answers 401 without one: bring our own,
    # revoked when done, so that the data dir's keys stay as they were (no active key left behind)
    key = json.loads(keys("create", "--scope", "admin", "--name", "idle-memory", "--json").strip().splitlines()[-1])
    headers = {"X-API-Key": key["token"]}
    image = Path(args.image) if args.image else None
    if args.identify and image is None:
        from embeddings import weights

        image = sorted((weights.sample_dataset_path() / "val").rglob("*.jpg"))[0]
    log = Path(args.log)
    t0 = time.monotonic()
    with open(log, "ab") as fh:
        proc = subprocess.Popen(serve_command(port, Path(args.data)), cwd=repo, env=env, stdout=fh, stderr=fh)
    try:
        ready = wait_ready(proc, f"http://127.0.0.1:{port}", timeout_s=900, poll_s=0.05)
        statuses: dict[str, int] = {}
        for _ in range(args.identify):
            assert image is not None
            url = f"http://127.0.0.1:{port}/v1/identify"
            r = httpx.post(url, files={"image": image.read_bytes()}, headers=headers, timeout=120)
            statuses[str(r.status_code)] = statuses.get(str(r.status_code), 0) + 1
        if set(statuses) - {"200"}:
            raise SystemExit(f"identify requests answered {statuses}, not all 200: not the figure asked for")
        time.sleep(args.settle)
        res = smaps_breakdown(proc.pid)
        res["ready_s"] = round(ready, 2)
        res["identify_requests"] = statuses
        res["tensorflow_loaded"] = "file: tensorflow" in res["by_category_mib"]
        res["server_repo"] = str(repo)
        res["spawn_to_sample_s"] = round(time.monotonic() - t0, 1)
    finally:
        stop(proc)
        keys("revoke", key["id"])
    return res


def index_bytes(gallery: Any) -> dict[str, Any]:
    """The FAISS indexes' own memory per model and segment, in MiB (vectors/codes, graph, id map)."""
    import faiss
    import numpy as np

    out: dict[str, Any] = {}
    for model_id, idx in gallery.cache.models.items():
        segs = []
        for seg in idx.segments:
            sub: Any = faiss.downcast_index(seg.index.index)
            item: dict[str, Any] = {"kind": seg.kind, "ntotal": seg.ntotal, "type": type(sub).__name__}
            item["id_map_mib"] = round(seg.ntotal * 8 / MIB, 1)
            if hasattr(sub, "hnsw"):
                storage: Any = faiss.downcast_index(sub.storage)
                item["storage_type"] = type(storage).__name__
                code_size = int(getattr(storage, "code_size", 0)) or 4 * storage.d
                item["vectors_mib"] = round(storage.ntotal * code_size / MIB, 1)
                hnsw = sub.hnsw
                item["graph_mib"] = round(
                    (hnsw.neighbors.size() * 4 + hnsw.offsets.size() * 8 + hnsw.levels.size() * 4) / MIB, 1
                )
            else:
                item["vectors_mib"] = round(seg.ntotal * 4 * sub.d / MIB, 1)
            segs.append(item)
        out[model_id] = segs
    out["subject_of_mib"] = round(np.asarray(gallery.cache.subject_of).nbytes / MIB, 1)
    return out


def cmd_stages(args: argparse.Namespace) -> dict[str, Any]:
    steps: list[tuple[str, float]] = [("python", rss_mib())]

    def mark(name: str) -> None:
        gc.collect()
        steps.append((name, rss_mib()))
        print(f"{name}: {steps[-1][1]:.1f} MiB (+{steps[-1][1] - steps[-2][1]:.1f})", flush=True)

    import numpy  # noqa: F401

    mark("numpy")
    import faiss  # noqa: F401

    mark("faiss")
    from service.bootstrap import default_analyzer
    from service.config import Settings
    from service.gallery import open_gallery

    mark("service modules (fastapi, pydantic, ...)")
    import tensorflow  # noqa: F401

    mark("tensorflow import")
    import openvino  # noqa: F401

    mark("openvino import")
    res: dict[str, Any] = {}
    gallery = None
    if args.data:
        gallery = open_gallery(Path(args.data), _storage(args.storage), auto_maintain=False)
        mark("open gallery")
        res["index"] = index_bytes(gallery)
    settings = Settings()
    analyzer = default_analyzer(settings)
    mark("analyzer: MTCNN + encoder loaded and warmed")
    res["steps_mib"] = {name: round(v, 1) for name, v in steps}
    res["deltas_mib"] = {name: round(v - steps[i - 1][1], 1) for i, (name, v) in enumerate(steps) if i}
    del analyzer
    if gallery is not None:
        gallery.close()
    return res


def _storage(storage: str) -> Any:
    """Gallery settings with HNSW vectors stored as ``storage`` (``fp16``, ``sq8`` or ``float32``)."""
    from service.gallery import GallerySettings, IndexParams

    return GallerySettings(index=IndexParams(hnsw_storage=storage))


def _exact_top1(x: Any, probes: Any, chunk: int = 131_072) -> tuple[Any, Any]:
    """Row index of each probe's nearest vector in ``x`` (unit float32) and its L2 distance, by brute force."""
    import numpy as np

    best = np.full(len(probes), -np.inf, np.float32)
    arg = np.zeros(len(probes), np.int64)
    for start in range(0, len(x), chunk):
        sim = probes @ x[start : start + chunk].T
        j = sim.argmax(axis=1)
        v = sim[np.arange(len(probes)), j]
        better = v > best
        best[better] = v[better]
        arg[better] = start + j[better]
    return arg, np.sqrt(np.clip(2.0 - 2.0 * best, 0.0, 4.0))


def _open_e2e_gallery(args: argparse.Namespace) -> tuple[Any, str, dict[str, Any]]:
    """The gallery of an e2e data dir (``--data``, with its ``held_out.json``), opened with ``--storage``;
    returns (gallery, model id, held_out metadata)."""
    from service.gallery import open_gallery

    data = Path(args.data)
    meta = json.loads((data / "held_out.json").read_text())
    g = open_gallery(data, _storage(args.storage), auto_maintain=False)
    return g, str(meta["model_id"]), meta


def cmd_recall(args: argparse.Namespace) -> dict[str, Any]:
    import numpy as np

    from bench.gallery import Synthetic

    g, model_id, meta = _open_e2e_gallery(args)
    try:
        main_seg = g.cache.models[model_id].main
        storage = main_seg.storage if main_seg is not None else "flat"
        rows = g.store._reader().execute("SELECT id, embedding FROM faces WHERE model_id = ? ORDER BY id", (model_id,))
        ids_l: list[int] = []
        blobs: list[bytes] = []
        for fid, blob in rows:
            ids_l.append(fid)
            blobs.append(blob)
        ids = np.array(ids_l, np.int64)
        x = np.frombuffer(b"".join(blobs), "<f4").reshape(len(ids), 128)
        del blobs
        lfw = np.load(args.lfw_npz)
        by_path = {str(p): i for i, p in enumerate(lfw["paths"])}
        held = [by_path[h["path"]] for h in meta["held_out"] if h["path"] in by_path]
        syn = Synthetic(int(meta["synthetic_faces"]), int(meta["seed"]))
        sets = {
            "lfw_held_out": lfw["embeddings"][held].astype(np.float32),
            "synthetic_enrolled": syn.probes(args.probes),
            "synthetic_strangers": Synthetic(args.probes * 10, seed=987_654).probes(args.probes),
        }
        res: dict[str, Any] = {"storage": storage, "faces": len(ids), "ef_search": args.ef_search}
        g.set_ef_search(args.ef_search)
        for name, probes in sets.items():
            probes = probes / np.linalg.norm(probes, axis=1, keepdims=True)
            arg, exact_d = _exact_top1(x, probes)
            exact_face = ids[arg]
            got = g.search(probes, model_id=model_id, top_k=5)
            face = np.array([r[0].face_id if r else -1 for r in got])
            dist = np.array([r[0].distance if r else np.inf for r in got])
            subj = g.cache.subject_of
            item: dict[str, Any] = {
                "probes": len(probes),
                "recall_at_1_face": round(float((face == exact_face).mean()), 4),
                "recall_at_1_subject": round(float((subj[face] == subj[exact_face]).mean()), 4),
                "top1_distance_error_max": round(float(np.abs(dist - exact_d).max()), 5),
                "top1_distance_error_mean": round(float(np.abs(dist - exact_d).mean()), 6),
                "exact_top1_distance_median": round(float(np.median(exact_d)), 4),
            }
            for t in args.thresholds:
                item[f"decision_differs_at_{t}"] = int(((dist <= t) != (exact_d <= t)).sum())
            res[name] = item
            print(name, json.dumps(item), flush=True)
    finally:
        g.close()
    return res


def cmd_latency(args: argparse.Namespace) -> dict[str, Any]:
    import faiss
    import numpy as np

    from bench.gallery import Synthetic

    faiss.omp_set_num_threads(1)
    g, model_id, meta = _open_e2e_gallery(args)
    try:
        main_seg = g.cache.models[model_id].main
        probes = Synthetic(int(meta["synthetic_faces"]), int(meta["seed"])).probes(args.probes + 100)
        for p in probes[:100]:  # warm-up
            g.search(p[None], model_id=model_id, top_k=5)
        times = []
        for p in probes[100:]:
            t = time.perf_counter()
            g.search(p[None], model_id=model_id, top_k=5)
            times.append(time.perf_counter() - t)
        ms = np.array(times) * 1e3
        res = {
            "storage": main_seg.storage if main_seg is not None else "flat",
            "probes": len(times),
            "p50_ms": round(float(np.percentile(ms, 50)), 3),
            "p99_ms": round(float(np.percentile(ms, 99)), 3),
            "mean_ms": round(float(ms.mean()), 3),
        }
    finally:
        g.close()
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    sm = sub.add_parser("smaps", help="an idle server's smaps, by mapping")
    sm.add_argument("--data", required=True)
    sm.add_argument("--settle", type=float, default=5.0, help="seconds after ready before sampling")
    sm.add_argument("--log", default=str(REPORTS / "idle_memory.server.log"))
    sm.add_argument("--server-env", action="append", default=[], metavar="KEY=VALUE")
    sm.add_argument("--server-repo", default=None, help="run the server from this checkout (default: this one)")
    sm.add_argument("--identify", type=int, default=0, help="/v1/identify requests to send before sampling")
    sm.add_argument("--image", default=None, help="the photo to identify (default: a 5-celebrity val photo)")
    st = sub.add_parser("stages", help="RSS after each start-up step, in this process")
    st.add_argument("--data", default=None, help="gallery data dir (none: skip the gallery)")
    st.add_argument("--storage", default="fp16", choices=["fp16", "sq8", "float32"], help="HNSW vector storage")
    rc = sub.add_parser("recall", help="recall@1 and open-set decisions of the gallery vs exact search")
    rc.add_argument("--data", required=True, help="a data dir made by bench/e2e.py build")
    rc.add_argument("--storage", default="fp16", choices=["fp16", "sq8", "float32"])
    rc.add_argument("--lfw-npz", default=str(REPORTS / "lfw_embeddings.npz"))
    rc.add_argument("--probes", type=int, default=2000, help="synthetic probes per set")
    rc.add_argument("--ef-search", type=int, default=128)
    rc.add_argument("--thresholds", type=float, nargs="+", default=[0.8, 1.0, 1.075])
    lt = sub.add_parser("latency", help="single-probe gallery.search latency (run it under the timed lock)")
    lt.add_argument("--data", required=True)
    lt.add_argument("--storage", default="fp16", choices=["fp16", "sq8", "float32"])
    lt.add_argument("--probes", type=int, default=2000)
    for p in (sm, st, rc, lt):
        p.add_argument("--out", default=None)
        p.add_argument("--label", default=None)
    args = ap.parse_args()
    run = {"smaps": cmd_smaps, "stages": cmd_stages, "recall": cmd_recall, "latency": cmd_latency}[args.cmd]
    res = run(args)
    print(json.dumps(res, indent=2), flush=True)
    if args.out:
        out = Path(args.out)
        data = json.loads(out.read_text()) if out.exists() else {}
        data[args.label or args.cmd] = res
        out.write_text(json.dumps(data, indent=2) + "\n")


if __name__ == "__main__":
    main()
