"""The activation cache: each crop (and its augmented variants) run once through the frozen head, stored float16.

Layout: ``(images, variants, *activation_shape)`` float16, e.g. (N, 4, 3, 3, 1792) = 32 KiB per variant at
Block8_*/Mixed_7a. Crops are prewhitened with ``embeddings.align.prewhiten`` (the serving function) before the head.
Variant 0 is always the crop itself and variant 1 its mirror image (used for flip test-time augmentation in
evaluation); the others are random ``augment``s seeded per image, so a cache is reproducible.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from embeddings.align import prewhiten
from embeddings.tf_quiet import import_tensorflow
from embeddings.training.augment import Crop, variants
from embeddings.types import Detection

Transform = Callable[[Crop], Crop]


def cache_key(**parts: object) -> str:
    """A short stable hash of the settings that determine a cache's contents."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def compute_activations(
    head: Any,
    crops: Callable[[int], Crop],
    count: int,
    *,
    n_variants: int,
    seed: int,
    transform: Transform | None = None,
    batch_size: int = 32,
    progress: Callable[[int], None] = lambda _: None,
) -> npt.NDArray[np.float16]:
    """Run ``count`` crops (``crops(i)`` -> aligned uint8 crop) through ``head``; ``transform`` (e.g. a camera
    degradation) is applied to the crop before the variants are made. Returns float16
    ``(count, n_variants, *head.output.shape[1:])``."""
    tf = import_tensorflow()

    shape = tuple(int(d) for d in head.output.shape[1:])
    out = np.empty((count, n_variants, *shape), dtype=np.float16)
    forward = tf.function(lambda x: head(x, training=False), reduce_retracing=True)
    per_batch = max(batch_size // n_variants, 1)
    for start in range(0, count, per_batch):
        idx = range(start, min(start + per_batch, count))
        batch: list[Crop] = []
        for i in idx:
            crop = crops(i)
            if transform is not None:
                crop = transform(crop)
            batch.extend(variants(crop, n_variants, np.random.default_rng([seed, i])))
        acts = np.asarray(forward(prewhiten(np.stack(batch))), dtype=np.float32)
        out[start : start + len(idx)] = acts.reshape(len(idx), n_variants, *shape).astype(np.float16)
        progress(len(idx))
    return out


def cached_activations(
    path: Path,
    head: Any,
    root: Path,
    items: Sequence[tuple[str, Detection]],
    *,
    n_variants: int,
    seed: int,
    transform: Transform | None = None,
    margin: float,
    rotate: bool,
    photo_transform: Transform | None = None,
    progress: Callable[[int], None] = lambda _: None,
) -> npt.NDArray[np.float16]:
    """``compute_activations`` for ``items`` (relative path, detection), loaded from ``path`` (.npy) when it
    exists, else computed and saved there atomically. The caller puts the settings' ``cache_key`` in ``path``.
    ``photo_transform`` alters the whole photo before alignment, ``transform`` the aligned crop."""
    from embeddings.training.data import load_crop

    if path.is_file():
        arr = np.load(path, mmap_mode="r")
        if arr.shape[:2] == (len(items), n_variants):
            progress(len(items))
            return np.asarray(arr)
    acts = compute_activations(
        head,
        lambda i: load_crop(
            root, items[i][0], items[i][1], margin=margin, rotate=rotate, photo_transform=photo_transform
        ),
        len(items),
        n_variants=n_variants,
        seed=seed,
        transform=transform,
        progress=progress,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npy")
    np.save(tmp, acts)
    tmp.replace(path)
    return acts
