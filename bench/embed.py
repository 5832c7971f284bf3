"""Encoder throughput: facerec's compiled, batched encoder vs keras-facenet's ``model.predict`` path.

Both run the same weights on the same crops in the same process. Prints faces/s at batch 1, 8 and 32 and the
ratio, plus the time to load the encoder from the cache. Usage:

    .venv/bin/python bench/embed.py [--seconds 4] [--out reports/embed.json]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np


def faces_per_second(fn: Any, crops: np.ndarray, batch: int, seconds: float) -> float:
    """Call ``fn`` on ``batch`` crops repeatedly for about ``seconds``; faces per second (after 2 warm-up calls)."""
    x = crops[:batch]
    fn(x)
    fn(x)
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds or n < 3:
        fn(x)
        n += 1
    return n * batch / (time.perf_counter() - start)


def keras_facenet_baseline(encoder: Any) -> Any:
    """keras-facenet's ``FaceNet`` object with its own model (incl. its normalize layer) holding our weights."""
    from keras_facenet import FaceNet
    from keras_facenet.inception_resnet_v1 import InceptionResNetV1
    from keras_facenet.metadata import MODEL_METADATA

    full = InceptionResNetV1(input_shape=(None, None, 3), classes=128)
    for layer in encoder.model.layers:
        if layer.weights:
            full.get_layer(layer.name).set_weights(layer.get_weights())
    baseline = FaceNet.__new__(FaceNet)  # skip __init__: it downloads weights from a host we cannot reach
    baseline.metadata = MODEL_METADATA["20170512-110547"]
    baseline.model = full
    return baseline


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=4.0, help="measuring time per setting")
    parser.add_argument("--out", type=Path, default=None, help="write the figures as JSON here")
    args = parser.parse_args()

    import keras

    from embeddings import weights
    from embeddings.facenet import FaceNetEncoder

    keras.utils.disable_interactive_logging()  # model.predict's progress bar
    t0 = time.perf_counter()
    path = weights.resolve()  # verifies the cached file's sha256
    encoder = FaceNetEncoder(path)
    load_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    encoder.warm_up()
    warm_s = time.perf_counter() - t0
    baseline = keras_facenet_baseline(encoder)

    rng = np.random.default_rng(0)
    crops = rng.integers(0, 256, size=(32, 160, 160, 3), dtype=np.uint8)
    ours = encoder.encode(crops[:4], flip_tta=False)
    theirs = np.asarray(baseline.embeddings(list(crops[:4])))
    max_diff = float(np.abs(ours - theirs).max())

    rows = []
    for batch in (1, 8, 32):
        fast = faces_per_second(lambda x: encoder.encode(x, flip_tta=False), crops, batch, args.seconds)
        flip = faces_per_second(lambda x: encoder.encode(x, flip_tta=True), crops, batch, args.seconds)
        slow = faces_per_second(lambda x: baseline.embeddings(list(x)), crops, batch, args.seconds)
        rows.append(
            {
                "batch": batch,
                "facerec_faces_s": fast,
                "facerec_flip_tta_faces_s": flip,
                "keras_facenet_predict_faces_s": slow,
                "ratio": fast / slow,
            }
        )
    print(f"load from cache (sha256 check + build + weights): {load_s:.2f} s, first call (trace): {warm_s:.2f} s")
    print(f"max |facerec - keras-facenet| over 4 embeddings: {max_diff:.2e}")
    print(f"{'batch':>5} {'facerec f/s':>12} {'flip-TTA f/s':>13} {'predict f/s':>12} {'ratio':>6}")
    for r in rows:
        print(
            f"{r['batch']:>5} {r['facerec_faces_s']:>12.1f} {r['facerec_flip_tta_faces_s']:>13.1f} "
            f"{r['keras_facenet_predict_faces_s']:>12.1f} {r['ratio']:>6.2f}"
        )
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(
            json.dumps({"load_s": load_s, "warm_up_s": warm_s, "max_abs_diff": max_diff, "rows": rows}, indent=2)
        )


if __name__ == "__main__":
    main()
