"""Shared fixtures: the real FaceNet weights, the real MTCNN and the 5-celebrity set shipped with the weights."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.milvusfixtures import milvus_lite_uri, milvus_server  # noqa: F401  (real Milvus: see milvusfixtures)
from tests.pgfixtures import pg_cluster, pg_new_db, pg_url  # noqa: F401  (a real PostgreSQL: see pgfixtures)
from tests.service.server import Server

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@pytest.fixture(scope="session")
def weights_path() -> Path:
    from embeddings import weights

    return weights.resolve()


@pytest.fixture(scope="session")
def celebrity_root(weights_path: Path) -> Path:
    """``<root>/{train,val}/<person>/*.jpg``: 5 people, 93 train and 25 val photos (fetched with the weights)."""
    from embeddings import weights

    root = weights.sample_dataset_path()
    if not (root / "val").is_dir():
        weights.fetch_sample_dataset()
    return root


@pytest.fixture(scope="session")
def analyzer(weights_path: Path):
    """One real FaceAnalyzer (MTCNN + FaceNet) for the whole session; loading costs a few seconds."""
    from embeddings import FaceAnalyzer

    fa = FaceAnalyzer(weights_path=weights_path)
    fa.warm_up()
    return fa


@pytest.fixture(scope="module")
def client(server: Server) -> Iterator[httpx.Client]:
    """An HTTP client of the module's real ``server`` (a module defines that fixture)."""
    with httpx.Client(base_url=server.url, timeout=120.0) as c:
        yield c


def image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in {".jpg", ".jpeg", ".png"})


def decoded_with_peak(data: bytes) -> tuple[Any, int]:
    """``decode_image(data)`` and the most bytes Python-visible allocations (numpy arrays, bytes) held at once
    during it (tracemalloc; OpenCV's and Pillow's own buffers are not seen)."""
    import tracemalloc

    from embeddings.images import decode_image

    tracemalloc.start()
    try:
        out = decode_image(data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return out, peak
