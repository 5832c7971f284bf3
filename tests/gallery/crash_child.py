"""Child process of the crash-safety test: enrols (and sometimes erases) faces in a loop until killed.

Prints ``add <face id>`` and ``del <face id>`` to stdout, flushed, only *after* the call returned (i.e.
after the gallery acknowledged it), and ``deleting <face id>`` just before a delete.
Small thresholds make kills land during snapshots and HNSW builds too.
Usage: ``python -m tests.gallery.crash_child DATA_DIR SEED``.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

from service.gallery import GallerySettings, IndexParams, LocalGallery, NewFace

MODEL = "facenet-20170512-110547"
SETTINGS = GallerySettings(
    index=IndexParams(hnsw_threshold=300, merge_batch=60, merge_chunk=30),
    snapshot_every_changes=50,
    snapshot_interval_s=0.2,
    erasure_snapshot_delay_s=0.05,
    maintenance_tick_s=0.01,
)
"""Tiny thresholds: HNSW builds, merges and snapshots happen every few hundred milliseconds."""


def main() -> None:
    data, seed = Path(sys.argv[1]), int(sys.argv[2])
    rng = np.random.default_rng(seed)
    g = LocalGallery(data, SETTINGS)
    print("ready", flush=True)
    mine: list[int] = []
    while True:
        s = g.create_subject(name=f"c{seed}")
        x = rng.standard_normal((int(rng.integers(1, 6)), 128)).astype(np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        recs = g.add_faces(s.id, [NewFace(v, MODEL) for v in x])
        sys.stdout.write("".join(f"add {r.id}\n" for r in recs))
        sys.stdout.flush()
        mine += [r.id for r in recs]
        if rng.random() < 0.15 and mine:
            victim = mine.pop(int(rng.integers(len(mine))))
            print(f"deleting {victim}", flush=True)  # a kill from here on leaves it either way
            g.delete_face(victim)
            print(f"del {victim}", flush=True)
        time.sleep(0.003)  # leave the maintenance thread some room


if __name__ == "__main__":
    main()
