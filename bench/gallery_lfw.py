"""The ``lfw`` part of bench/gallery.py: open-set false identification and HNSW recall on real embeddings.

Input: an npz with ``embeddings`` float32 (N, 128) unit vectors from the production pipeline, ``names`` (N,)
and ``paths`` (N,). Steps:

1. FAR(t) over *every* impostor pair (two images of different people) on a 0.005 grid; ``--write-far-table``
   stores it as ``service/gallery/impostor_far.json`` (what :mod:`service.gallery.calibration` predicts from).
2. Open-set FIR measured: people are split at random into an enrolment pool and strangers (one probe image
   each). For gallery sizes G, G people are drawn from the pool (1 face each, or all their faces); a stranger
   is falsely identified when its best distance over the gallery is <= t. Averaged over repeats, next to the
   prediction ``1 - (1 - FAR(t))^N`` with N = faces and N = subjects.
3. Recall@1 of the HNSW gallery against exact search: every image enrolled except one held-out probe image of
   each person with >= 2 images; the face returned by the real gallery (HNSW, efSearch as configured) is
   compared with brute force.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from service.gallery import NewFace, open_gallery
from service.gallery.calibration import (
    FAR_TABLE,
    PROBE_TABLE,
    false_identification_rate,
    fir_from_far,
    impostor_far_table,
    impostor_probe_table,
)

THRESHOLDS = [0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.2]
GALLERY_SIZES = [10, 30, 100, 300, 1000, 2000]
REPEATS = 5


def lfw(args: argparse.Namespace) -> None:
    d = np.load(args.npz, allow_pickle=False)
    emb = np.asarray(d["embeddings"], np.float32)
    names = np.asarray(d["names"]).astype(str)
    norms = np.linalg.norm(emb, axis=1)
    model_id = str(d["model_id"]) if "model_id" in d.files else "facenet-20170512-110547"
    people, inverse, counts = np.unique(names, return_inverse=True, return_counts=True)
    out: dict[str, Any] = {
        "npz": args.npz,
        "images": len(emb),
        "people": len(people),
        "model_id": model_id,
        "norm_min": float(norms.min()),
        "norm_max": float(norms.max()),
    }
    print(f"LFW embeddings: {len(emb)} images of {len(people)} people, norms {norms.min():.4f}..{norms.max():.4f}")

    # 1. impostor FAR table
    t0 = time.perf_counter()
    table = impostor_far_table(
        emb,
        names,
        model_id=model_id,
        source=f"LFW (deep-funneled) {len(emb)} images of {len(people)} people embedded by the production "
        f"pipeline; every impostor pair; bench/gallery.py lfw",
    )
    out["far_table_s"] = time.perf_counter() - t0
    out["impostor_pairs"] = table.pairs
    out["far"] = {str(t): table.far_at(t) for t in THRESHOLDS}
    print(f"impostor pairs: {table.pairs:,}; FAR: " + ", ".join(f"{t}: {table.far_at(t):.2e}" for t in THRESHOLDS))
    probe_table = impostor_probe_table(emb, names, probes=2000, seed=args.seed)
    if args.write_far_table:
        FAR_TABLE.write_text(json.dumps(table.to_json()) + "\n")
        probe_table.save(PROBE_TABLE)
        print(f"wrote {FAR_TABLE} and {PROBE_TABLE}")

    # 2. open-set FIR vs gallery size
    rng = np.random.default_rng(args.seed)
    order = rng.permutation(len(people))
    strangers, pool = order[: len(people) // 2], order[len(people) // 2 :]
    by_person = [np.flatnonzero(inverse == p) for p in range(len(people))]
    probe_idx = np.array([rng.choice(by_person[p]) for p in strangers])
    probes = emb[probe_idx]
    fir_rows: list[dict[str, Any]] = []
    for mode in ("one face per subject", "all faces"):
        for g_size in [*GALLERY_SIZES, len(pool)]:
            if g_size > len(pool):
                continue
            measured: dict[float, list[float]] = {t: [] for t in THRESHOLDS}
            n_faces: list[int] = []
            for _ in range(REPEATS if g_size < len(pool) else 1):
                chosen = rng.choice(pool, g_size, replace=False)
                if mode == "all faces":
                    idx = np.concatenate([by_person[p] for p in chosen])
                else:
                    idx = np.array([rng.choice(by_person[p]) for p in chosen])
                n_faces.append(len(idx))
                best = np.sqrt(np.clip(2 - 2 * (probes @ emb[idx].T).max(axis=1), 0, 4))
                for t in THRESHOLDS:
                    measured[t].append(float(np.mean(best <= t)))
            nf = float(np.mean(n_faces))
            for t in THRESHOLDS:
                far = table.far_at(t)
                fir_rows.append(
                    {
                        "mode": mode,
                        "subjects": g_size,
                        "faces": nf,
                        "threshold": t,
                        "fir_measured": float(np.mean(measured[t])),
                        "fir_pred_faces": fir_from_far(far, round(nf)),
                        "fir_pred_subjects": fir_from_far(far, g_size),
                        "fir_pred_mixture_faces": false_identification_rate(
                            t, round(nf), table=table, probes=probe_table
                        ),
                        "fir_pred_mixture_subjects": false_identification_rate(
                            t, g_size, table=table, probes=probe_table
                        ),
                        "strangers": len(probes),
                    }
                )
    out["fir"] = fir_rows
    print(
        f"\nopen-set FIR ({len(probes)} strangers): measured / independent model (N=faces) / "
        "per-probe mixture (N=faces)"
    )
    print(f"{'mode':>22} {'subj':>5} {'faces':>6} " + " ".join(f"{'t=' + str(t):>20}" for t in (0.8, 0.9, 1.0, 1.1)))
    for mode in ("one face per subject", "all faces"):
        for g_size in sorted({int(r["subjects"]) for r in fir_rows if r["mode"] == mode}):
            by_t = {r["threshold"]: r for r in fir_rows if r["mode"] == mode and r["subjects"] == g_size}
            cells = " ".join(
                f"{by_t[t]['fir_measured']:>6.3f}/{by_t[t]['fir_pred_faces']:.3f}/{by_t[t]['fir_pred_mixture_faces']:.3f}"
                for t in (0.8, 0.9, 1.0, 1.1)
            )
            print(f"{mode:>22} {g_size:>5} {by_t[0.8]['faces']:>6.0f} {cells}")

    # 3. HNSW recall@1 vs exact on the real embeddings
    multi = np.flatnonzero(counts >= 2)
    held = np.array([rng.choice(by_person[p]) for p in multi])
    keep = np.setdiff1d(np.arange(len(emb)), held)
    with tempfile.TemporaryDirectory() as tmp:
        g = open_gallery(Path(tmp), hnsw_threshold=1000, auto_maintain=False)
        subs = g.create_subjects([(str(p), None) for p in people])
        batch: dict[str, list[NewFace]] = {}
        for i in keep:
            batch.setdefault(subs[inverse[i]].id, []).append(NewFace(emb[i], model_id))
        recs = g.add_faces_many(batch)
        face_of = {r.id: r for r in recs}
        # records come back subject by subject; map face id -> embedding row to get the exact answer
        row_of_face: dict[int, int] = {}
        pos = {sid: 0 for sid in batch}
        rows_by_sid: dict[str, list[int]] = {}
        for i in keep:
            rows_by_sid.setdefault(subs[inverse[i]].id, []).append(int(i))
        for r in recs:
            row_of_face[r.id] = rows_by_sid[r.subject_id][pos[r.subject_id]]
            pos[r.subject_id] += 1
        face_ids = np.array(list(row_of_face))
        emb_rows = np.array([row_of_face[f] for f in face_ids])
        exact = face_ids[(emb[held] @ emb[emb_rows].T).argmax(axis=1)]
        flat_top = np.array([r[0].face_id for r in g.search(emb[held], model_id=model_id, top_k=1)])
        g.maintain()
        kind = g.stats().indexes[model_id].kind
        hnsw_res = g.search(emb[held], model_id=model_id, top_k=1)
        hnsw_top = np.array([r[0].face_id for r in hnsw_res])
        correct = np.mean([face_of[f].subject_id == subs[inverse[h]].id for f, h in zip(hnsw_top, held, strict=True)])
        g.close()
    out["recall"] = {
        "gallery_faces": len(keep),
        "probes": len(held),
        "index_kind": kind,
        "flat_recall_at_1": float(np.mean(flat_top == exact)),
        "hnsw_recall_at_1": float(np.mean(hnsw_top == exact)),
        "rank1_identification_rate": float(correct),
    }
    print(f"\nrecall on LFW: {out['recall']}")
    Path(args.out).write_text(json.dumps(out, indent=2))
    print(f"wrote {args.out}")
