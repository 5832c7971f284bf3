"""Input checks every gallery backend applies before it writes or searches (one source for the rules).

Embeddings are float32 (128,) unit vectors; a vector whose L2 norm is off 1 by more than
:data:`UNIT_TOLERANCE` is rejected with :class:`InvalidEmbedding`, never silently normalised.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from embeddings.types import EMBEDDING_DIM
from service.gallery.errors import InvalidEmbedding, ReindexIncomplete
from service.gallery.types import NewFace

UNIT_TOLERANCE = 1e-2
"""Embeddings whose L2 norm is off 1 by more than this are rejected (not silently normalised)."""


def unit_vectors(x: Any, what: str) -> npt.NDArray[np.float32]:
    """``x`` as a C-contiguous float32 (n, 128) array of exact unit rows (a (128,) vector is one row).

    Raises :class:`InvalidEmbedding` naming ``what`` for a wrong shape, non-finite values or norms off 1."""
    arr = np.asarray(x, dtype=np.float32)
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2 or arr.shape[1] != EMBEDDING_DIM:
        raise InvalidEmbedding(f"{what}: expected shape (n, {EMBEDDING_DIM}), got {np.shape(x)}")
    if not np.isfinite(arr).all():
        raise InvalidEmbedding(f"{what}: not finite")
    norms = np.linalg.norm(arr, axis=1)
    if len(arr) and np.abs(norms - 1.0).max() > UNIT_TOLERANCE:
        raise InvalidEmbedding(f"{what}: not unit vectors (norms {norms.min():.3f}..{norms.max():.3f})")
    return np.ascontiguousarray(arr / norms[:, None], dtype=np.float32)


def new_face_vectors(faces: Sequence[NewFace]) -> npt.NDArray[np.float32]:
    """The validated (n, 128) embeddings of faces to enrol; :class:`InvalidEmbedding` if one is not a unit
    vector or has no ``model_id``."""
    rows = [np.asarray(f.embedding, np.float32).reshape(-1) for f in faces]
    for row in rows:
        if row.shape != (EMBEDDING_DIM,):
            raise InvalidEmbedding(f"embedding: expected {EMBEDDING_DIM} values, got {row.shape[0]}")
    vecs = unit_vectors(np.stack(rows), "embedding")
    if any(not f.model_id for f in faces):
        raise InvalidEmbedding("model_id must be set")
    return vecs


def check_limit(name: str, value: int) -> None:
    """``ValueError`` unless ``value >= 1`` (``limit`` of a page, ``top_k`` of a search)."""
    if value < 1:
        raise ValueError(f"{name} must be >= 1")


def require_staged(counts: Mapping[str, int], model_id: str) -> None:
    """:class:`ReindexIncomplete` unless every face of another model has a staged embedding of ``model_id``
    (``counts``: a backend's ``reindex_counts``, with ``todo`` and ``staged``)."""
    missing = counts["todo"] - counts["staged"]
    if missing:
        raise ReindexIncomplete(
            f"{missing} of {counts['todo']} faces have no embedding of model {model_id!r} yet; "
            "run `facerec reindex` to finish",
            missing=missing,
        )
