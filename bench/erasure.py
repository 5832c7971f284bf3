"""Erasure latency on the embedded backend: what ``DELETE /v1/subjects/{id}?erase_photo_faces=true`` does to the
stores, timed per store, on a data dir of a few thousand synthetic faces.

    python bench/erasure.py --faces 3000 --erase 40 --out reports/erasure.json

A fresh data dir holds ``--faces`` gallery faces (5 per subject, random unit embeddings, each with a 160x160
crop that compresses like a face crop, ~25 KB of PNG), as many photo-library faces (named after the same
subjects, with crops), 2 events per subject and 50 finished video jobs of 6 tracks each. Then ``--erase``
subjects are erased one at a time in the order of ``service/erasure.py``: the events, the video jobs' tracks, the
photo faces (store only; the photo index's erase is not timed), the gallery (rows, crops, WAL truncated, FAISS),
then the first three again (``again``: nothing left to erase by then, unless recorded meanwhile). Reports p50 /
p95 / max ms per step and in total. A store method the code under test lacks is timed as 0 (to compare with a
checkout from before it existed: ``PYTHONPATH=<checkout> python bench/erasure.py``).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from service.events.store import Event, SQLiteEventStore
from service.gallery import GallerySettings, NewFace, open_gallery
from service.photos.sqlite import SQLitePhotoStore
from service.photos.types import NewObservation
from service.video.jobstore import SQLiteJobStore

MODEL = "facenet-20170512-110547"
PER_SUBJECT = 5
BOX = {"x": 0, "y": 0, "width": 160, "height": 160}


def _crop(rng: np.random.Generator) -> npt.NDArray[np.uint8]:
    """Smooth shapes plus a little noise: PNG-compresses to about the size of a real face crop."""
    small = rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)
    big = np.repeat(np.repeat(small, 8, axis=0), 8, axis=1)
    return np.clip(big.astype(np.int16) + rng.integers(-6, 7, big.shape), 0, 255).astype(np.uint8)


def _png(crop: npt.NDArray[np.uint8]) -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(crop).save(buf, format="PNG")
    return buf.getvalue()


def build(data: Path, faces: int, rng: np.random.Generator) -> tuple[Any, list[str]]:
    gallery = open_gallery(data, GallerySettings(), auto_maintain=False)
    subjects = gallery.create_subjects([(f"person {i}", None) for i in range(faces // PER_SUBJECT)])
    ids = [s.id for s in subjects]
    vecs = rng.standard_normal((faces, 128)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    for start in range(0, len(ids), 100):
        batch = {
            sid: [NewFace(vecs[i * PER_SUBJECT + k], MODEL, BOX, crop=_crop(rng)) for k in range(PER_SUBJECT)]
            for i, sid in enumerate(ids[start : start + 100], start)
        }
        gallery.add_faces_many(batch)
    photos, events, jobs = SQLitePhotoStore(data), SQLiteEventStore(data), SQLiteJobStore(data)
    for start in range(0, len(ids), 50):
        batch_photos: list[tuple[str, str | None, list[NewObservation]]] = []
        for i, sid in enumerate(ids[start : start + 50], start):
            obs = [
                NewObservation(vecs[i * PER_SUBJECT + k], MODEL, BOX, {}, _png(_crop(rng)), subject_id=sid)
                for k in range(PER_SUBJECT)
            ]
            batch_photos.append((f"photo-{i}", None, obs))
        photos.add_photos(batch_photos)
    now = time.time()
    evs = [
        Event(f"e{i}-{k}", now, "video:x", k, sid, f"person {i}", 0.5, 0.01, 0.0, 1.0, 5)
        for i, sid in enumerate(ids)
        for k in range(2)
    ]
    events.add(evs, outbox=False)
    for _ in range(50):
        job_id, path = jobs.new_path()
        jobs.create(job_id, filename="clip.mp4", path=path, fps=None, size=1)
        tracks = [{"track_id": t, "subject_id": str(rng.choice(ids)), "name": "x"} for t in range(6)]
        jobs.update(job_id, status="done", tracks=tracks)
    return (gallery, photos, events, jobs), ids


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--faces", type=int, default=3000)
    ap.add_argument("--erase", type=int, default=40)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    rng = np.random.default_rng(7)
    with tempfile.TemporaryDirectory(prefix="facerec-erasure-") as tmp:
        (gallery, photos, events, jobs), ids = build(Path(tmp), args.faces, rng)
        mentions = [events.erase_subject, getattr(jobs, "erase_subject", None), photos.delete_subject_faces]
        calls: dict[str, list[Any]] = {  # in service/erasure.py's order: the mentions, the subject, the mentions again
            "events": mentions[:1],
            "jobs": mentions[1:2],
            "photos": mentions[2:],
            "gallery": [gallery.delete_subject],
            "again": mentions,
        }
        steps: dict[str, list[float]] = {name: [] for name in [*calls, "total"]}
        for sid in rng.choice(ids, args.erase, replace=False):
            total = 0.0
            for name, fns in calls.items():
                t0 = time.perf_counter()
                for call in fns:
                    if call is not None:
                        call(str(sid))
                ms = (time.perf_counter() - t0) * 1000
                steps[name].append(ms)
                total += ms
            steps["total"].append(total)
        for store in (gallery, photos, events, jobs):
            store.close()
    out = {
        "faces": args.faces,
        "erased": args.erase,
        **{
            k: {q: round(float(np.percentile(v, p)), 2) for q, p in (("p50", 50), ("p95", 95), ("max", 100))}
            for k, v in steps.items()
        },
    }
    json.dump(out, sys.stdout, indent=1)
    print()
    if args.out:
        args.out.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
