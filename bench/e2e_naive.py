"""The naive baseline of the end-to-end benchmark (``bench/e2e.py naive``): the ``mtcnn`` package on the full
photo, keras-facenet's ``model.predict`` and a numpy L2 scan of the gallery's vectors, timed per photo."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `bench` when run as a script

from bench.e2e_util import load_photos, spread, timed_lock, vm, write_result


def gallery_matrix(data: Path, model_id: str) -> tuple[npt.NDArray[np.float32], npt.NDArray[Any]]:
    """Every face vector of ``model_id`` in the data dir's SQLite (read-only) and its subject's id."""
    import sqlite3

    conn = sqlite3.connect(f"file:{data / 'gallery.sqlite3'}?mode=ro", uri=True)
    rows = conn.execute(
        "SELECT s.id, f.embedding FROM faces f JOIN subjects s ON s.pk = f.subject_pk WHERE f.model_id = ?",
        (model_id,),
    ).fetchall()
    conn.close()
    vectors = np.frombuffer(b"".join(r[1] for r in rows), dtype="<f4").reshape(len(rows), 128)
    return np.ascontiguousarray(vectors), np.array([r[0] for r in rows])


def decode(blob: bytes) -> npt.NDArray[np.uint8]:
    """JPEG bytes -> RGB uint8 (H, W, 3)."""
    import cv2

    bgr = cv2.imdecode(np.frombuffer(blob, np.uint8), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError("not an image")
    return np.asarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), dtype=np.uint8)


def naive(args: argparse.Namespace) -> None:
    """The naive pipeline, timed per photo from the JPEG bytes to the nearest gallery face."""
    import cv2
    from mtcnn import MTCNN

    from embeddings.align import prewhiten
    from embeddings.facenet import build_model, l2_normalize
    from embeddings.weights import MODEL_ID, resolve

    t = time.perf_counter()
    vectors, subject_of = gallery_matrix(Path(args.data), MODEL_ID)
    norms = (vectors * vectors).sum(axis=1)
    print(f"gallery: {len(vectors)} vectors read in {time.perf_counter() - t:.1f} s", flush=True)
    detector = MTCNN()
    model = build_model()
    model.load_weights(str(resolve(allow_fetch=False)))
    shots = load_photos(Path(args.photos), args.kind)[: args.count]

    def run_one(blob: bytes) -> tuple[str | None, float, int]:
        rgb = decode(blob)
        faces = detector.detect_faces(rgb)
        if not faces:
            return None, float("nan"), 0
        crops = []
        for f in faces:
            x, y, w, h = (max(0, int(v)) for v in f["box"])
            crops.append(cv2.resize(rgb[y : y + h, x : x + w], (160, 160), interpolation=cv2.INTER_LINEAR))
        emb = l2_normalize(model.predict(prewhiten(np.stack(crops).astype(np.uint8)), verbose=0))
        d2 = norms[None, :] - 2.0 * (emb @ vectors.T) + (emb * emb).sum(axis=1)[:, None]  # numpy scan
        best = int(np.argmin(d2[0]))
        return str(subject_of[best]), float(np.sqrt(max(d2[0, best], 0.0))), len(faces)

    for _, blob, _ in shots[:2]:
        run_one(blob)  # warm-up (first predict builds the graph)
    with timed_lock(args.lock, f"naive {args.kind}"):
        times, correct = [], 0
        for _, blob, expected in shots:
            t = time.perf_counter()
            sid, _dist, _n = run_one(blob)
            times.append(time.perf_counter() - t)
            correct += int(sid == expected)
        stages = _naive_stages(shots[0][1], detector, model, vectors, norms)
    res = {
        "what": "mtcnn.MTCNN().detect_faces + keras-facenet InceptionResNetV1 model.predict + numpy L2 scan",
        "photos": args.kind,
        "gallery_vectors": len(vectors),
        "latency": spread(times),
        "top1_correct": correct,
        "stages_ms_first_photo": stages,
        "rss_mib": round(vm(), 0),
    }
    print(json.dumps(res, indent=1), flush=True)
    write_result(Path(args.out), f"naive_{args.kind}", res)


def _naive_stages(blob: bytes, detector: Any, model: Any, vectors: Any, norms: Any) -> dict[str, float]:
    """Median of 3 of each naive stage on one photo, ms (where the time goes)."""
    import cv2

    from embeddings.align import prewhiten

    rgb = decode(blob)
    det, enc, scan = [], [], []
    for _ in range(3):
        t = time.perf_counter()
        faces = detector.detect_faces(rgb)
        det.append(time.perf_counter() - t)
        x, y, w, h = (max(0, int(v)) for v in faces[0]["box"])
        crop = cv2.resize(rgb[y : y + h, x : x + w], (160, 160))
        t = time.perf_counter()
        emb = model.predict(prewhiten(crop[None].astype(np.uint8)), verbose=0)
        enc.append(time.perf_counter() - t)
        emb = emb / np.linalg.norm(emb)
        t = time.perf_counter()
        d2 = norms - 2.0 * (vectors @ emb[0]) + 1.0
        int(np.argmin(d2))
        scan.append(time.perf_counter() - t)
    return {
        "detect_faces": round(float(np.median(det)) * 1e3, 1),
        "predict": round(float(np.median(enc)) * 1e3, 1),
        "numpy_scan": round(float(np.median(scan)) * 1e3, 1),
    }
