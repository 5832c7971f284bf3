"""Fixtures for the gallery tests: synthetic unit vectors, galleries on tmp dirs (no real data needed)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from service.gallery import GallerySettings, IndexParams, LocalGallery, NewFace, open_gallery
from service.gallery.local import ProgressFn

MODEL = "facenet-20170512-110547"


def unit(rng: np.random.Generator, n: int, dim: int = 128) -> npt.NDArray[np.float32]:
    """``n`` random float32 unit vectors."""
    x = rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def faces(vectors: npt.NDArray[np.float32], model: str = MODEL) -> list[NewFace]:
    return [NewFace(embedding=v, model_id=model) for v in vectors]


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture
def make_gallery(tmp_path: Path) -> Iterator[Callable[..., LocalGallery]]:
    """``make_gallery(**kwargs)`` opens a gallery in ``tmp_path/data`` (no background thread by default)."""
    opened: list[LocalGallery] = []

    def make(
        data_dir: Path | None = None, auto_maintain: bool = False, progress: ProgressFn | None = None, **index: Any
    ) -> LocalGallery:
        settings = GallerySettings(index=IndexParams(**index), auto_maintain=auto_maintain)
        g = open_gallery(data_dir or tmp_path / "data", settings, progress=progress)
        opened.append(g)
        return g

    yield make
    for g in opened:
        g.close()
