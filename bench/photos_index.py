"""Indexing throughput of the photo library on LFW photos (docs/PHOTOS.md), in a fresh data dir in a temporary
folder, with the model the service loads and an empty gallery.

``--mode pipeline`` (default): :func:`service.photos.pipeline.index_photos`, what ``facerec photos index DIR``
runs: ``--workers`` threads decode, detect, align and PNG-encode; the faces of ``--batch`` photos are encoded in
one FaceNet call, identified together and stored in one transaction. ``--mode serial``: one
``PhotoLibrary.index_photo`` call per photo from ``--workers`` threads (what ``POST /v1/photos`` does per
request), for comparison. The photo bytes are read before the clock starts.

Prints photos/s, faces, clusters, and the cluster join + store + index time per photo (the part beyond
detection and encoding).

    .venv/bin/python bench/photos_index.py --limit 2000
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=Path("../shared/data/lfw/lfw-deepfunneled"))
    parser.add_argument("--limit", type=int, default=2000, help="N photos spread over the alphabet (0 = all)")
    parser.add_argument("--mode", choices=("pipeline", "serial"), default="pipeline")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch", type=int, default=32, help="pipeline: photos per encode call and transaction")
    parser.add_argument("--profile", action="store_true", help="pipeline: seconds spent in each stage")
    args = parser.parse_args()

    from service.bootstrap import default_analyzer
    from service.config import Settings
    from service.gallery import open_gallery
    from service.photos.library import IndexOptions
    from service.photos.pipeline import index_photos
    from service.photos.service import close_library, open_library

    paths = sorted(args.root.glob("*/*.jpg"))
    if args.limit:
        paths = paths[:: max(1, len(paths) // args.limit)][: args.limit]
    data = [(p.read_bytes(), p.name) for p in paths]
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(data=Path(tmp), photo_library=True, photo_recluster_interval_s=0)
        analyzer = default_analyzer(settings)
        gallery = open_gallery(Path(tmp))
        lib = open_library(settings)
        assert lib is not None
        options = IndexOptions.of(settings)
        stages = profile_stages(lib, analyzer) if args.profile else {}

        def one(item: tuple[bytes, str]) -> tuple[int, float]:
            r = lib.index_photo(analyzer=analyzer, gallery=gallery, image=item[0], external_id=item[1], options=options)
            return len(r.faces), r.join_ms

        start = time.perf_counter()
        if args.mode == "serial":
            with ThreadPoolExecutor(args.workers) as pool:
                results = list(pool.map(one, data))
        else:
            results = []
            for _, r in index_photos(
                lib,
                analyzer=analyzer,
                gallery=gallery,
                items=data,
                options=options,
                workers=args.workers,
                batch=args.batch,
            ):
                assert not isinstance(r, Exception), r
                results.append((len(r.faces), r.join_ms))
        seconds = time.perf_counter() - start
        faces = sum(n for n, _ in results)
        joins = np.array([ms for _, ms in results])
        _, clusters = lib.store.list_clusters(limit=1, sample=0)
        print(
            f"{len(data)} LFW photos indexed in {seconds:.1f} s: {len(data) / seconds:.1f} photos/s "
            f"({args.mode}, {args.workers} workers, batch {args.batch if args.mode == 'pipeline' else 1}), "
            f"{faces} faces in {clusters} clusters; cluster join + store + index per photo: "
            f"p50 {np.percentile(joins, 50):.1f} ms, p99 {np.percentile(joins, 99):.1f} ms"
        )
        if stages:
            print("stage seconds (summed over threads): " + ", ".join(f"{k} {v:.1f}" for k, v in stages.items()))
        close_library(lib)
        gallery.close()


def profile_stages(lib: Any, analyzer: Any) -> dict[str, float]:
    """Wrap the pipeline's stages with timers: prepare (decode + detect + align + PNG, per worker), detect alone,
    encode, store (cluster vote + transaction + index add). Returns the dict the timers add to."""
    import threading

    from service.photos import pipeline

    totals: dict[str, float] = {"prepare": 0.0, "detect": 0.0, "encode": 0.0, "store": 0.0}
    lock = threading.Lock()

    def timed(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def run(*a: Any, **kw: Any) -> Any:
            start = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                with lock:
                    totals[name] += time.perf_counter() - start

        return run

    pipeline._prepare = timed("prepare", pipeline._prepare)
    analyzer.detect = timed("detect", analyzer.detect)
    analyzer.encode = timed("encode", analyzer.encode)
    lib.add_photos = timed("store", lib.add_photos)
    return totals


if __name__ == "__main__":
    main()
