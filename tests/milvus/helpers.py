"""Shared helpers of the Milvus tests."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from service.gallery.types import NewFace

MODEL = "facenet-test"


def unit(rng: np.random.Generator, n: int = 1, dim: int = 128) -> npt.NDArray[np.float32]:
    v = rng.standard_normal((n, dim)).astype(np.float32)
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


def faces(vecs: npt.NDArray[np.float32], model: str = MODEL) -> list[NewFace]:
    return [NewFace(embedding=v, model_id=model) for v in vecs]
