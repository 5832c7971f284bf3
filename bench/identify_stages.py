"""Where the time of one ``/v1/identify`` goes: its stages timed one after the other, in this process, against a
real gallery, one photo at a time (a lone client; no HTTP, no batching with other requests).

Stages (wall ms per photo, p50 and mean over ``--rounds`` rounds of the photos after one warm-up round):

* ``decode``: JPEG bytes -> upright RGB (:func:`embeddings.images.decode_image`);
* ``detect``: the server's detector (OpenVINO MTCNN, downscaling and refinement as configured);
* ``align``: the 160x160 crops of the faces found;
* ``encode``: the encoder on those crops (precision and flip TTA as configured);
* ``policy``: the threshold choice at the gallery's size (:func:`service.recognition.openset.open_set_policy`);
* ``rank``: the gallery search and the person-level re-scoring of the candidates (``rank_subjects``);
* ``identify``: the whole :func:`service.recognition.identify` call on the same photo, for comparison.

The gallery is opened with the server's settings (``FACEREC_*`` from the environment) on ``--data``, which it
locks and may write to (a snapshot, a storage conversion): give it a copy. Usage::

    .venv/bin/python bench/identify_stages.py --data <copy of reports/e2e/gallery-1m> \\
        --photos reports/e2e/photos/1080p --out reports/identify-stages.json
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.paths import write_report

STAGES = ("decode", "detect", "align", "encode", "policy", "rank", "identify")


def measure(data: Path, photos: list[Path], rounds: int) -> dict[str, Any]:
    from embeddings.images import decode_image
    from service import recognition
    from service.bootstrap import default_analyzer, default_gallery
    from service.config import Settings
    from service.recognition.identification import rank_subjects
    from service.recognition.openset import open_set_policy

    settings = Settings(data=data)
    started = time.perf_counter()
    gallery = default_gallery(settings)
    opened_s = time.perf_counter() - started
    analyzer = default_analyzer(settings)
    fixed = float(analyzer.threshold)
    blobs = [p.read_bytes() for p in photos]
    times: dict[str, list[float]] = {s: [] for s in STAGES}
    faces = 0
    for round_ in range(rounds + 1):
        for blob in blobs:
            marks = [time.perf_counter()]
            rgb = decode_image(blob)
            marks.append(time.perf_counter())
            found = analyzer.detect(rgb)
            marks.append(time.perf_counter())
            crops = [analyzer.align(rgb, d) for d in found]
            marks.append(time.perf_counter())
            probes = analyzer.encode(np.stack(crops)).astype(np.float32) if crops else None
            marks.append(time.perf_counter())
            policy = open_set_policy(
                gallery, model_id=analyzer.model_id, fixed=fixed, max_fir=settings.max_fir, requested=None
            )
            marks.append(time.perf_counter())
            if probes is not None:
                norm = policy.normalisation
                rank_subjects(gallery, probes, model_id=analyzer.model_id, top_k=settings.top_k, normalisation=norm)
            marks.append(time.perf_counter())
            recognition.identify(
                analyzer=analyzer, gallery=gallery, image=blob, threshold=None, top_k=settings.top_k,
                fixed_threshold=settings.match_threshold, max_fir=settings.max_fir,
            )  # fmt: skip
            marks.append(time.perf_counter())
            if round_ == 0:
                continue  # warm-up
            faces += len(found)
            for stage, (a, b) in zip(STAGES, itertools.pairwise(marks), strict=True):
                times[stage].append((b - a) * 1000.0)
    stats = gallery.stats()
    gallery.close()
    return {
        "gallery": {"faces": stats.faces, "subjects": stats.subjects, "opened_s": round(opened_s, 2)},
        "photos": len(photos),
        "rounds": rounds,
        "faces_per_photo": round(faces / max(len(photos) * rounds, 1), 3),
        "ms": {
            s: {"p50": round(statistics.median(v), 2), "mean": round(statistics.mean(v), 2)} for s, v in times.items()
        },
        "stages_sum_p50_ms": round(sum(statistics.median(times[s]) for s in STAGES[:-1]), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="a copy of a gallery's data dir")
    parser.add_argument("--photos", type=Path, required=True, help="a folder of .jpg photos")
    parser.add_argument("--limit", type=int, default=20, help="photos used (sorted by name)")
    parser.add_argument("--rounds", type=int, default=2, help="timed rounds over the photos")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    photos = sorted(args.photos.glob("*.jpg"))[: args.limit]
    if not photos:
        parser.error(f"no .jpg in {args.photos}")
    result = measure(args.data, photos, args.rounds)
    write_report(args.out, result)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
