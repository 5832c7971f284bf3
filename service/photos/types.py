"""Value types of the photo library.

An *observation* is one face seen in an indexed photo (not an enrolled template): its embedding, box, quality,
optional aligned crop, and either the subject it is named as or the cluster of unnamed faces it belongs to.
Conventions as in the gallery: embeddings float32 (128,) unit vectors; L2 distances in [0, 2]; times Unix
seconds (UTC); boxes ``{"x", "y", "width", "height"}`` in pixels of the upright photo.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt


@dataclass(frozen=True, slots=True)
class Photo:
    """An indexed photo: ``id`` is random hex; the photo itself is never stored, only its sha256."""

    id: str
    sha256: str
    external_id: str | None
    created_at: float


@dataclass(frozen=True, slots=True)
class NewObservation:
    """A face to store with its photo. ``subject_id`` set: named by identify; else ``cluster_id`` is its group:
    an existing cluster, None (a new cluster of its own) or negative (a new cluster shared by the faces of one
    :meth:`~service.photos.base.PhotoStore.add_photos` call with that same negative id)."""

    embedding: npt.NDArray[np.float32] = field(repr=False)
    model_id: str
    box: dict[str, Any]
    quality: dict[str, Any]
    crop_png: bytes | None = field(default=None, repr=False)
    subject_id: str | None = None
    distance: float | None = None
    cluster_id: int | None = None


@dataclass(frozen=True, slots=True)
class Observation:
    """A stored face of a photo. ``face_id``: the gallery face enrolled from it when its cluster was named."""

    id: int
    photo_id: str
    model_id: str
    box: dict[str, Any]
    quality: dict[str, Any]
    subject_id: str | None
    distance: float | None
    cluster_id: int | None
    face_id: int | None
    created_at: float
    has_crop: bool


@dataclass(frozen=True, slots=True)
class ClusterSummary:
    """A group of unnamed faces: its size and the ids of a few of its faces (the best quality first)."""

    id: int
    size: int
    sample_face_ids: list[int]


@dataclass(frozen=True, slots=True)
class Naming:
    """A cluster naming in progress (its intent, written before the gallery is touched): the observations to
    name (``faces``), those of them to enrol as templates (``enrol``, the ones that passed the quality gate),
    and the target: an existing ``subject_id``, or a new subject ``name`` (created with ``{"photo_naming": id}``
    in its metadata, so a repair finds it)."""

    id: int
    cluster_id: int
    faces: list[int]
    enrol: list[int]
    subject_id: str | None
    name: str | None
