"""Child process of the crash-safety test: enrols (and sometimes erases) faces in a loop until killed.

Prints ``add <face id>`` and ``del <face id>`` to stdout, flushed, only *after* the call returned (i.e.
after the gallery acknowledged it), and ``deleting <face id>`` just before a delete.
Small thresholds make kills land during snapshots and HNSW builds too.
Usage: ``python -m tests.gallery.crash_child DATA_DIR SEED``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from service.gallery import NewFace, open_gallery

MODEL = "facenet-20170512-110547"


def main() -> None:
    data, seed = Path(sys.argv[1]), int(sys.argv[2])
    rng = np.random.default_rng(seed)
    g = open_gallery(data, hnsw_threshold=400, snapshot_every_changes=40, snapshot_interval_s=0.5)
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


if __name__ == "__main__":
    main()
