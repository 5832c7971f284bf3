"""Value types of the gallery.

Conventions: embeddings are float32 (128,) unit vectors; distances are L2 in [0, 2] (0 = identical);
similarity is the cosine, ``1 - d**2 / 2``. Times are Unix seconds (UTC). Boxes are
``{"x", "y", "width", "height"}`` in pixels of the upright source image.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt


@dataclass(frozen=True, slots=True)
class NewFace:
    """A face to enrol: its embedding, the model that produced it and what is known of its source."""

    embedding: npt.NDArray[np.float32] = field(repr=False)
    model_id: str
    box: dict[str, Any] | None = None
    quality: dict[str, Any] | None = None
    image_sha256: str | None = None
    crop: npt.NDArray[np.uint8] | None = field(default=None, repr=False)
    """The aligned (160, 160, 3) uint8 RGB crop the embedding came from; stored (as PNG, same transaction) when
    given, so that ``facerec reindex`` can re-embed the face with another model. None: not stored."""


@dataclass(frozen=True, slots=True)
class FaceRecord:
    """A stored face (without its embedding). ``id`` is an integer never reused."""

    id: int
    subject_id: str
    model_id: str
    box: dict[str, Any] | None
    quality: dict[str, Any] | None
    image_sha256: str | None
    created_at: float


@dataclass(frozen=True, slots=True)
class Subject:
    """A person: ``id`` is a random URL-safe string (uuid4 hex); ``face_count`` counts faces of all models;
    ``sample_face_id`` is the id of its earliest-enrolled face (the lowest id, of any model), None without faces:
    a thumbnail for lists, read in the same query as the subject."""

    id: str
    name: str
    metadata: dict[str, Any]
    created_at: float
    updated_at: float
    face_count: int
    sample_face_id: int | None = None


@dataclass(frozen=True, slots=True)
class Candidate:
    """A subject ranked for a probe: its best (smallest) L2 distance over its faces, and that face."""

    subject_id: str
    subject_name: str
    face_id: int
    distance: float
    similarity: float


@dataclass(frozen=True, slots=True)
class IndexInfo:
    """One model's index: ``kind`` is ``"flat"`` (exact) or ``"hnsw"`` (approximate main + exact delta)."""

    kind: str
    live: int
    hnsw: int
    flat: int
    tombstones: int
    building: bool


@dataclass(frozen=True, slots=True)
class SnapshotInfo:
    """What one model's saved snapshot contains: changes up to ``max_face_id`` / ``max_deletion_seq``."""

    path: str
    max_face_id: int
    max_deletion_seq: int
    saved_at: float


@dataclass(frozen=True, slots=True)
class GalleryStats:
    """Counts, per-model index state and the last change each snapshot holds."""

    subjects: int
    faces: int
    faces_by_model: dict[str, int]
    indexes: dict[str, IndexInfo]
    snapshots: dict[str, SnapshotInfo]
    last_change: tuple[int, int]
    """``(max face id, max deletion seq)`` committed to SQLite and applied to the index."""
