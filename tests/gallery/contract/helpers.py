"""Synthetic data of the contract tests: unit embeddings, crops, faces to enrol."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from service.gallery import NewFace

MODEL = "facenet-20170512-110547"
OTHER = "ft-other-model"


def unit(rng: np.random.Generator, n: int, dim: int = 128) -> npt.NDArray[np.float32]:
    """``n`` random float32 unit vectors."""
    x = rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def near(rng: np.random.Generator, centre: npt.NDArray[np.float32], n: int, spread: float) -> npt.NDArray[np.float32]:
    """``n`` unit vectors around ``centre`` at L2 distances of about ``spread``."""
    x = centre[None, :] + spread * unit(rng, n) / np.sqrt(2)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def crop(rng: np.random.Generator) -> npt.NDArray[np.uint8]:
    """A random aligned (160, 160, 3) uint8 crop."""
    return rng.integers(0, 256, (160, 160, 3), dtype=np.uint8)


def faces(vectors: npt.NDArray[np.float32], model: str = MODEL, **kwargs: object) -> list[NewFace]:
    return [NewFace(embedding=v, model_id=model, **kwargs) for v in vectors]  # type: ignore[arg-type]
