"""The ``lfw`` part of bench/gallery.py: HNSW recall on real embeddings.

Input: an npz with ``embeddings`` float32 (N, 128) unit vectors from the production pipeline, ``names`` (N,)
and ``paths`` (N,). Recall@1 of the HNSW gallery against exact search: every image enrolled except one held-out
probe image of each person with >= 2 images; the face returned by the real gallery (HNSW, efSearch as
configured) is compared with brute force.

Open-set identification (false-identification rates, calibration) is measured by bench/openset.py.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from service.gallery import GallerySettings, IndexParams, NewFace, open_gallery


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

    rng = np.random.default_rng(args.seed)
    by_person = [np.flatnonzero(inverse == p) for p in range(len(people))]

    # HNSW recall@1 vs exact on the real embeddings
    multi = np.flatnonzero(counts >= 2)
    held = np.array([rng.choice(by_person[p]) for p in multi])
    keep = np.setdiff1d(np.arange(len(emb)), held)
    with tempfile.TemporaryDirectory() as tmp:
        g = open_gallery(Path(tmp), GallerySettings(index=IndexParams(hnsw_threshold=1000)), auto_maintain=False)
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
