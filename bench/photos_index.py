"""Indexing throughput of the photo library on LFW photos (docs/PHOTOS.md): ``PhotoLibrary.index_photo`` (decode,
MTCNN, align, FaceNet, identify against an empty gallery, cluster join, SQLite write, FAISS add) from ``--workers``
threads, as the server runs it with ``FACEREC_INFERENCE_THREADS``; a fresh data dir in a temporary folder.

Prints photos/s, faces, and the cluster-join time per photo (the part beyond detection and encoding: the vote over
the nearest indexed faces, the store write and the index add).

    .venv/bin/python bench/photos_index.py --limit 2000
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=Path("../shared/data/lfw/lfw-deepfunneled"))
    parser.add_argument("--limit", type=int, default=2000, help="first N photos in path order (0 = all)")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()

    from service.app import default_analyzer
    from service.config import Settings
    from service.gallery import open_gallery
    from service.photos.service import close_library, open_library

    paths = sorted(args.root.glob("*/*.jpg"))
    if args.limit:
        # spread over the whole alphabet, not the first few people
        paths = paths[:: max(1, len(paths) // args.limit)][: args.limit]
    data = [p.read_bytes() for p in paths]
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(data=Path(tmp), photo_library=True, photo_recluster_interval_s=0)
        analyzer = default_analyzer(settings)
        gallery = open_gallery(Path(tmp))
        lib = open_library(settings)
        assert lib is not None

        def one(image: bytes) -> tuple[int, float]:
            r = lib.index_photo(
                analyzer=analyzer,
                gallery=gallery,
                image=image,
                external_id=None,
                store_crop=settings.store_crops,
                fixed_threshold=settings.match_threshold,
                max_fir=settings.max_fir,
            )
            return len(r.faces), r.join_ms

        start = time.perf_counter()
        with ThreadPoolExecutor(args.workers) as pool:
            results = list(pool.map(one, data))
        seconds = time.perf_counter() - start
        faces = sum(n for n, _ in results)
        joins = np.array([ms for _, ms in results])
        print(
            f"{len(data)} LFW photos indexed in {seconds:.1f} s: {len(data) / seconds:.1f} photos/s "
            f"({args.workers} workers), {faces} faces; cluster join + store + index per photo: "
            f"p50 {np.percentile(joins, 50):.1f} ms, p99 {np.percentile(joins, 99):.1f} ms"
        )
        close_library(lib)
        gallery.close()


if __name__ == "__main__":
    main()
