"""Shared helpers of the Milvus tests."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from service.gallery.types import NewFace

if TYPE_CHECKING:
    from tests.milvusfixtures import MilvusServer

MODEL = "facenet-test"


def unit(rng: np.random.Generator, n: int = 1, dim: int = 128) -> npt.NDArray[np.float32]:
    v = rng.standard_normal((n, dim)).astype(np.float32)
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


def faces(vecs: npt.NDArray[np.float32], model: str = MODEL) -> list[NewFace]:
    return [NewFace(embedding=v, model_id=model) for v in vecs]


@contextlib.contextmanager
def own_client(server: MilvusServer) -> Iterator[Any]:
    """A pymilvus client of the test's own (not a replica's or the gallery's), closed after the block."""
    from pymilvus import MilvusClient

    client = MilvusClient(uri=server.uri, timeout=30)
    try:
        yield client
    finally:
        client.close()
