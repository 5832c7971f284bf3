"""Face clustering benchmarks for the photo library (docs/PHOTOS.md).

``quality``: cluster every LFW face (the embeddings of bench/lfw_embeddings.py; people with 2+ photos are the
true groups, the rest singletons) with DBSCAN at Immich's settings (maxDistance 0.5 cosine distance = L2 1.0,
minFaces 3), HDBSCAN (scikit-learn), agglomerative average linkage (scikit-learn) and Chinese whispers
(service/photos/cluster.py) over thresholds; pairwise precision/recall/F and BCubed precision/recall/F. The
threshold of each method is chosen on half of the identities (dev: even crc32 of the name) and reported on the
other half (test) and on all. Noise points (label -1) count as singletons.

``scale``: synthetic unit embeddings (``--people`` identities x ~``--per`` faces, Gaussian spread around random
centres so that same-person distances are LFW-like) stored in a real photo library in a temporary dir: full
re-clustering time; the search index as the service keeps it (HNSW built as the background task does, its
snapshot saved and reloaded), search p50/p99 and recall@1 of held-out faces against an exact scan; the time a
new face takes to join its cluster.

    .venv/bin/python bench/cluster.py quality --embeddings reports/lfw_embeddings.npz
    .venv/bin/python bench/cluster.py scale --faces 100000
"""

from __future__ import annotations

import argparse
import functools
import json
import tempfile
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

Labels = npt.NDArray[np.int64]


def _singletons(labels: Labels) -> Labels:
    """Noise (-1) becomes a cluster of its own."""
    out = labels.astype(np.int64).copy()
    noise = out < 0
    out[noise] = out.max(initial=0) + 1 + np.arange(int(noise.sum()))
    return out


def scores(truth: Labels, pred: Labels) -> dict[str, float]:
    """Pairwise precision/recall/F1 and BCubed precision/recall/F1 of ``pred`` against ``truth``."""
    pred = _singletons(pred)
    _, t = np.unique(truth, return_inverse=True)
    _, p = np.unique(pred, return_inverse=True)
    cells = np.unique(t * (p.max() + 1) + p, return_counts=True)[1].astype(np.float64)
    pc = np.bincount(p).astype(np.float64)
    tc = np.bincount(t).astype(np.float64)
    tp = (cells * (cells - 1) / 2).sum()
    pp = (pc * (pc - 1) / 2).sum()
    tt = (tc * (tc - 1) / 2).sum()
    prec = tp / pp if pp else 1.0
    rec = tp / tt if tt else 1.0
    # BCubed: per item, |cluster n class| / |cluster| and / |class|
    key = t * (p.max() + 1) + p
    _, inv, cnt = np.unique(key, return_inverse=True, return_counts=True)
    inter = cnt[inv].astype(np.float64)
    bp = float(np.mean(inter / pc[p]))
    br = float(np.mean(inter / tc[t]))

    def f(a: float, b: float) -> float:
        return 2 * a * b / (a + b) if a + b else 0.0

    return {
        "pair_precision": float(prec),
        "pair_recall": float(rec),
        "pair_f": f(prec, rec),
        "bcubed_precision": bp,
        "bcubed_recall": br,
        "bcubed_f": f(bp, br),
        "clusters": len(pc),
    }


def run_dbscan(emb: npt.NDArray[np.float32], eps: float, min_samples: int) -> Labels:
    from sklearn.cluster import DBSCAN

    model = DBSCAN(eps=eps, min_samples=min_samples, metric="euclidean", algorithm="brute", n_jobs=1)
    return np.asarray(model.fit_predict(emb))


def run_hdbscan(emb: npt.NDArray[np.float32], min_cluster_size: int) -> Labels:
    from sklearn.cluster import HDBSCAN

    model = HDBSCAN(min_cluster_size=min_cluster_size, min_samples=1, metric="euclidean", algorithm="brute", n_jobs=1)
    return np.asarray(model.fit_predict(emb))


def run_agglomerative(emb: npt.NDArray[np.float32], threshold: float) -> Labels:
    from scipy.cluster.hierarchy import fcluster, linkage

    z = linkage(emb.astype(np.float64), method="average", metric="euclidean")
    return np.asarray(fcluster(z, t=threshold, criterion="distance"), dtype=np.int64)


def agglomerative_cut(emb: npt.NDArray[np.float32]) -> Callable[[float], Labels]:
    """Average linkage is computed once; each threshold is a cut of the same tree."""
    from scipy.cluster.hierarchy import fcluster, linkage

    z = linkage(emb.astype(np.float64), method="average", metric="euclidean")
    return lambda t: np.asarray(fcluster(z, t=t, criterion="distance"), dtype=np.int64)


def run_whispers(emb: npt.NDArray[np.float32], threshold: float) -> Labels:
    from service.photos.cluster import ClusterParams, cluster

    return cluster(emb, ClusterParams(threshold=threshold))


def run_whispers_fir(emb: npt.NDArray[np.float32], max_fir: float) -> Labels:
    """Chinese whispers at the library-size threshold the service uses (``linking_threshold``)."""
    from embeddings.models import PRETRAINED_ID
    from service.gallery.calibration import load_calibration
    from service.photos.cluster import ClusterParams, cluster, linking_threshold

    calibration = load_calibration(PRETRAINED_ID)
    threshold = linking_threshold(len(emb), calibration=calibration, max_fir=max_fir, cap=1.075)
    return cluster(emb, ClusterParams(threshold=threshold))


def quality(args: argparse.Namespace) -> None:
    data = np.load(args.embeddings)
    emb = data["embeddings"].astype(np.float32)
    names = data["names"]
    _, truth = np.unique(names, return_inverse=True)
    dev = np.array([zlib.crc32(str(n).encode()) % 2 == 0 for n in names])
    print(f"{len(emb)} faces, {len(set(names.tolist()))} people, dev {int(dev.sum())} / test {int((~dev).sum())}")
    results: list[dict[str, Any]] = []

    def evaluate(method: str, param: str, fn: Callable[[npt.NDArray[np.float32]], Labels]) -> None:
        row: dict[str, Any] = {"method": method, "param": param}
        for part, mask in (("dev", dev), ("test", ~dev), ("all", np.ones(len(emb), bool))):
            start = time.perf_counter()
            labels = fn(emb[mask])
            row[f"{part}_s"] = round(time.perf_counter() - start, 2)
            row[part] = scores(truth[mask], labels)
        results.append(row)
        a = row["all"]
        print(
            f"{method:13s} {param:18s} all: pairP {a['pair_precision']:.4f} pairR {a['pair_recall']:.4f} "
            f"B3 P/R/F {a['bcubed_precision']:.4f}/{a['bcubed_recall']:.4f}/{a['bcubed_f']:.4f} "
            f"clusters {a['clusters']} ({row['all_s']} s); test B3F {row['test']['bcubed_f']:.4f} "
            f"pairP {row['test']['pair_precision']:.4f} pairR {row['test']['pair_recall']:.4f}",
            flush=True,
        )

    evaluate("dbscan-immich", "eps=1.0,min=3", lambda e: run_dbscan(e, 1.0, 3))
    for eps in args.dbscan_eps:
        evaluate("dbscan", f"eps={eps},min=2", functools.partial(run_dbscan, eps=eps, min_samples=2))
    if not args.skip_hdbscan:
        evaluate("hdbscan", "min_cluster=2", lambda e: run_hdbscan(e, 2))
    for t in args.thresholds:
        evaluate("whispers", f"t={t}", functools.partial(run_whispers, threshold=t))
    for fir in args.firs:
        evaluate("whispers-fir", f"max_fir={fir}", functools.partial(run_whispers_fir, max_fir=fir))
    if not args.skip_agglomerative:
        cuts: dict[int, Callable[[float], Labels]] = {}

        def agg(e: npt.NDArray[np.float32], t: float) -> Labels:
            if len(e) not in cuts:
                cuts[len(e)] = agglomerative_cut(e)
            return cuts[len(e)](t)

        for t in args.agg_thresholds:
            evaluate("agglomerative", f"avg,t={t}", functools.partial(agg, t=t))
    best: dict[str, dict[str, Any]] = {}
    for row in results:
        cur = best.get(row["method"])
        if cur is None or row["dev"]["bcubed_f"] > cur["dev"]["bcubed_f"]:
            best[row["method"]] = row
    print("\nchosen on dev (best BCubed F), scored on test and all:")
    for method, row in best.items():
        t, a = row["test"], row["all"]
        print(
            f"  {method:13s} {row['param']:18s} test B3F {t['bcubed_f']:.4f} pairP {t['pair_precision']:.4f} "
            f"pairR {t['pair_recall']:.4f} | all B3F {a['bcubed_f']:.4f} pairP {a['pair_precision']:.4f} "
            f"pairR {a['pair_recall']:.4f} ({row['all_s']} s)"
        )
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"results": results, "chosen": best}, indent=1))


def synthetic(n: int, per: int, spread: float, seed: int = 0) -> tuple[npt.NDArray[np.float32], Labels]:
    """``n`` unit vectors in 128-d around ``n // per`` random centres; ``spread`` is the per-component sigma
    (0.05 gives same-person L2 distances of ~0.7 and different-person ~1.4, close to LFW's FaceNet figures)."""
    rng = np.random.default_rng(seed)
    people = max(1, n // per)
    centres = rng.standard_normal((people, 128)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    who = rng.integers(0, people, n)
    x = centres[who] + rng.standard_normal((n, 128)).astype(np.float32) * spread
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32), who.astype(np.int64)


def scale(args: argparse.Namespace) -> None:
    import faiss

    from service.gallery.segment import IndexParams
    from service.photos.cluster import ClusterParams
    from service.photos.clusters import recluster
    from service.photos.library import PhotoLibrary
    from service.photos.service import PHOTO_HNSW_THRESHOLD
    from service.photos.sqlite import SQLitePhotoStore
    from service.photos.types import NewObservation

    faiss.omp_set_num_threads(args.omp_threads)
    emb, who = synthetic(args.faces, args.per, args.spread)
    same = np.linalg.norm(emb[who == who[0]][:2][0] - emb[who == who[0]][:2][-1])
    print(f"{args.faces} synthetic faces, {len(set(who.tolist()))} people (one same-person distance {same:.2f})")
    from embeddings.models import PRETRAINED_ID

    model = PRETRAINED_ID  # the service's model: its calibration tables set the linking distance
    box = {"x": 0.0, "y": 0.0, "width": 100.0, "height": 100.0}
    q = {"face_size": 100.0, "confidence": 0.99, "sharpness": 100.0}
    with tempfile.TemporaryDirectory() as tmp:
        lib = PhotoLibrary(
            SQLitePhotoStore(Path(tmp)),
            cluster_params=ClusterParams(threshold=args.threshold),
            link_max_fir=args.max_fir or None,
            index_params=IndexParams(hnsw_threshold=args.hnsw_threshold or PHOTO_HNSW_THRESHOLD),
            index_dir=Path(tmp),
        )
        start = time.perf_counter()
        per_photo = 100
        for p in range(0, args.faces - args.probes, per_photo):
            faces = [NewObservation(e, model, box, q) for e in emb[p : min(p + per_photo, args.faces - args.probes)]]
            lib.store.add_photo(sha256=f"synthetic-{p}", external_id=None, faces=faces)
        print(f"stored {args.faces - args.probes} faces in {time.perf_counter() - start:.1f} s")
        start = time.perf_counter()
        lib.nearest(emb[:1], model_id=model, k=1)
        print(f"flat index built from the store in {time.perf_counter() - start:.2f} s")
        res = recluster(lib, model_id=model)
        print(f"linking distance at {res.faces} faces: {lib.link_threshold(res.faces, model_id=model):.3f}")
        labels = np.array([c for _, c in sorted(lib.store.cluster_of(list(range(1, res.faces + 1))).items())])
        sc = scores(who[: res.faces], labels) if len(labels) == res.faces else {}
        print(
            f"re-clustering {res.faces} faces: {res.seconds:.1f} s -> {res.clusters} clusters "
            f"(B3F {sc.get('bcubed_f', float('nan')):.4f}, pairP {sc.get('pair_precision', float('nan')):.4f}, "
            f"pairR {sc.get('pair_recall', float('nan')):.4f})"
        )
        start = time.perf_counter()
        _, total = lib.store.list_clusters(limit=50, sample=4)
        ms = (time.perf_counter() - start) * 1000
        print(f"first page of clusters (GET /v1/clusters, {total} clusters): {ms:.0f} ms")
        search_figures(lib, emb, args, model, tmp)
        joins = []
        for i in range(args.probes):
            face = NewObservation(emb[args.faces - args.probes + i], model, box, q)
            r = lib.add_faces(sha256=f"probe-{i}", external_id=None, faces=[face])
            joins.append(r.join_ms)
        print(
            f"a new face joining its cluster (vote + store write + index add): p50 {np.percentile(joins, 50):.1f}"
            f" ms, p99 {np.percentile(joins, 99):.1f} ms ({args.probes} photos)"
        )
        lib.close()


def search_figures(lib: Any, emb: npt.NDArray[np.float32], args: argparse.Namespace, model: str, tmp: str) -> None:
    """FindSimilar top-10 latency with the index the service builds (HNSW past its threshold, built as the
    background task does), recall@1 of the held-out probes against an exact scan, and the snapshot reload."""
    import faiss

    from service.photos.library import PhotoLibrary
    from service.photos.sqlite import SQLitePhotoStore

    indexed = emb[: args.faces - args.probes]
    probes = emb[args.faces - args.probes :]
    start = time.perf_counter()
    lib.index.maintain()
    print(f"index maintenance (HNSW build + snapshot): {time.perf_counter() - start:.1f} s -> {lib.index.kind(model)}")
    exact = faiss.IndexFlatL2(indexed.shape[1])
    exact.add(indexed)
    _, truth = exact.search(probes, 1)
    found = [lib.search(p, model_id=model, top_k=1, threshold=None)[0].face.id - 1 for p in probes]
    recall = float(np.mean(np.array(found) == truth[:, 0]))
    times = []
    for i in range(args.searches):
        start = time.perf_counter()
        lib.search(probes[i % len(probes)], model_id=model, top_k=10, threshold=None)
        times.append((time.perf_counter() - start) * 1000)
    print(
        f"search top-10 over {len(indexed)} faces ({lib.index.kind(model)}): p50 {np.percentile(times, 50):.2f} ms, "
        f"p99 {np.percentile(times, 99):.2f} ms ({args.searches} searches); recall@1 vs exact {recall:.4f} "
        f"({len(probes)} held-out probes)"
    )
    start = time.perf_counter()
    again = PhotoLibrary(SQLitePhotoStore(Path(tmp)), index_params=lib.index.params, index_dir=Path(tmp))
    again.nearest(probes[:1], model_id=model, k=1)
    print(f"index reloaded from its snapshot + reconciled with the store: {time.perf_counter() - start:.2f} s")
    again.store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    q = sub.add_parser("quality")
    q.add_argument("--embeddings", type=Path, default=Path("reports/lfw_embeddings.npz"))
    q.add_argument("--thresholds", type=float, nargs="+", default=[0.7, 0.75, 0.8, 0.85, 0.9, 1.0])
    q.add_argument("--firs", type=float, nargs="+", default=[0.05, 0.1, 0.2])
    q.add_argument("--agg-thresholds", type=float, nargs="+", default=[0.8, 0.85, 0.9, 0.95, 1.0, 1.1])
    q.add_argument("--dbscan-eps", type=float, nargs="+", default=[0.7, 0.8, 0.9])
    q.add_argument("--skip-hdbscan", action="store_true")
    q.add_argument("--skip-agglomerative", action="store_true")
    q.add_argument("--out", type=Path, default=Path("reports/cluster_quality.json"))
    s = sub.add_parser("scale")
    s.add_argument("--faces", type=int, default=100_000)
    s.add_argument("--per", type=int, default=10)
    s.add_argument("--spread", type=float, default=0.05)
    s.add_argument("--threshold", type=float, default=1.075, help="linking cap (the service: the match threshold)")
    s.add_argument("--max-fir", type=float, default=0.1, help="as FACEREC_PHOTO_CLUSTER_MAX_FIR (0 = fixed threshold)")
    s.add_argument("--searches", type=int, default=500)
    s.add_argument("--hnsw-threshold", type=int, default=0, help="photo index HNSW threshold (0 = the service's)")
    s.add_argument("--probes", type=int, default=200)
    s.add_argument("--omp-threads", type=int, default=1, help="FAISS OpenMP threads (bench/gallery.py uses 1)")
    args = parser.parse_args()
    quality(args) if args.cmd == "quality" else scale(args)


if __name__ == "__main__":
    main()
