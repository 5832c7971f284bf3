"""Re-index benchmark: how long ``facerec reindex`` takes per face, and how long the switch blocks writes.

    python bench/reindex.py --faces 1000 --out reports/reindex.json

A fresh data dir gets ``--faces`` faces with real aligned crops (the 5-celebrity photos, detected and aligned
with the production pipeline; beyond their number, copies with +-1 grey-level noise so that every crop is a
distinct image) and their pretrained embeddings. A model directory is written with ``save_model_dir`` in a temp
cache: the pretrained network with its bottleneck negated (same cost per face as any fine-tuned model of the
architecture). Then, timed: ``reindex`` with no server (load the new model, embed every crop in batches,
commit the staged rows, switch, close), with a breakdown of the model load, the embedding and the switch; and
an identification check (each val photo's nearest subject under the new model).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def write_negated_model(cache: Path, model_id: str, weights_path: Path, *, note: str) -> None:
    """Make ``cache`` a cache dir (its ``weights/`` and ``datasets/`` link to the real cache's) holding the model
    dir ``model_id``: the pretrained network with its bottleneck negated (Dense kernel, BatchNorm beta and moving
    mean), so it maps every crop to exactly minus the pretrained embedding. Not trained; ``note`` says so."""
    from embeddings import weights
    from embeddings.facenet import build_model
    from embeddings.training.model_dir import save_model_dir

    for name in ("weights", "datasets"):
        (cache / name).symlink_to(weights.cache_dir() / name, target_is_directory=True)
    model = build_model()
    model.load_weights(str(weights_path))
    dense, bn = model.get_layer("Bottleneck"), model.get_layer("Bottleneck_BatchNorm")
    dense.set_weights([-w for w in dense.get_weights()])
    beta, mean, var = bn.get_weights()
    bn.set_weights([-beta, -mean, var])
    card = {
        "model_id": model_id,
        "base_model_id": weights.MODEL_ID,
        "threshold": 1.075,
        "data": {"note": note},
        "params": {},
        "validation": {"before": {}, "after": {}},
        "train_seconds": 0.0,
    }
    save_model_dir(model, card, cache)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--faces", type=int, default=1000)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()

    from embeddings import FaceAnalyzer, weights
    from service.config import Settings
    from service.gallery import NewFace, open_gallery
    from service.reindex import _encoder, embed_pending

    wpath = weights.resolve()
    root = weights.sample_dataset_path()
    tmp = Path(tempfile.mkdtemp(prefix="facerec-reindex-bench-"))
    cache = tmp / "cache"
    cache.mkdir()
    model_id = "ft-bench-negated-20261123000000"
    write_negated_model(
        cache, model_id, wpath, note="benchmark: pretrained network with its bottleneck negated, not trained"
    )
    os.environ["FACEREC_CACHE"] = str(cache)

    analyzer = FaceAnalyzer(weights_path=wpath)
    people: list[tuple[str, Any, Any]] = []  # (person, crop, embedding) of every train photo with a face
    for person_dir in sorted((root / "train").iterdir()):
        for photo in sorted(person_dir.glob("*.jpg")):
            faces = analyzer.analyze(photo.read_bytes())
            if faces:
                people.append((person_dir.name, faces[0].crop, faces[0].embedding))

    data = tmp / "data"
    rng = np.random.default_rng(0)
    with open_gallery(data) as g:
        sids = {p: g.create_subject(name=p).id for p in sorted({p for p, _, _ in people})}
        batch: dict[str, list[Any]] = {}
        for i in range(args.faces):
            person, crop, emb = people[i % len(people)]
            if i >= len(people):
                noise = rng.integers(-1, 2, crop.shape)
                crop = np.clip(crop.astype(np.int16) + noise, 0, 255).astype(np.uint8)
            batch.setdefault(sids[person], []).append(NewFace(emb, weights.MODEL_ID, crop=crop))
        g.add_faces_many(batch)

    settings = Settings(data=data)
    t0 = time.perf_counter()
    encode = _encoder(settings, model_id)
    t_load = time.perf_counter() - t0
    with open_gallery(data) as g:
        t1 = time.perf_counter()
        embedded = embed_pending(g, model_id, encode=encode, batch_size=args.batch_size)
        t_embed = time.perf_counter() - t1
        t2 = time.perf_counter()
        switched = g.switch_model(model_id)
        t_switch = time.perf_counter() - t2
        hits = total = 0
        for person_dir in sorted((root / "val").iterdir()):
            if person_dir.name not in sids:
                continue
            for photo in sorted(person_dir.glob("*.jpg")):
                faces = analyzer.analyze(photo.read_bytes())
                if not faces:
                    continue
                probe = encode(faces[0].crop[None])  # the new model's embedding of the probe
                best = g.search(probe, model_id=model_id, top_k=1)[0][0]
                total += 1
                hits += best.subject_name == person_dir.name
    result = {
        "faces": args.faces,
        "real_crops": len(people),
        "batch_size": args.batch_size,
        "embedded": embedded,
        "switched": switched,
        "model_load_s": round(t_load, 2),
        "embed_s": round(t_embed, 2),
        "faces_per_s": round(embedded / t_embed, 1),
        "switch_s": round(t_switch, 3),
        "val_rank1": f"{hits}/{total}",
    }
    shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(result, indent=2))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
