"""Request and response models of the photo library endpoints (``/v1/photos``, ``/v1/search``,
``/v1/clusters``, ``/v1/subjects/{id}/photos``). Distances are L2 in [0, 2]; similarity ``1 - d**2 / 2``."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from service.ids import ROW_ID_MAX
from service.nul_guard import RequestModel
from service.photos.types import Observation, Photo


class PhotoFaceOut(BaseModel):
    """A face seen in an indexed photo: named (``subject_id``) or in a cluster of unnamed faces."""

    id: int
    photo_id: str
    box: dict[str, float]
    quality: dict[str, Any]
    subject_id: str | None = Field(description="The subject it is named as; null = unnamed.")
    distance: float | None = Field(description="L2 distance to the subject's nearest template when identify named it.")
    cluster_id: int | None = Field(description="Its cluster of unnamed faces; null once named.")
    enrolled_face_id: int | None = Field(description="The gallery face enrolled from it when its cluster was named.")
    has_crop: bool
    model_id: str
    created_at: float

    @classmethod
    def of(cls, o: Observation) -> PhotoFaceOut:
        return cls(
            id=o.id,
            photo_id=o.photo_id,
            box=o.box,
            quality=o.quality,
            subject_id=o.subject_id,
            distance=o.distance,
            cluster_id=o.cluster_id,
            enrolled_face_id=o.face_id,
            has_crop=o.has_crop,
            model_id=o.model_id,
            created_at=o.created_at,
        )


class PhotoOut(BaseModel):
    id: str
    sha256: str
    external_id: str | None
    created_at: float
    created: bool = Field(True, description="False: this photo (same sha256) was indexed before; nothing changed.")
    faces: list[PhotoFaceOut]

    @classmethod
    def of(cls, p: Photo, faces: list[Observation], created: bool = True) -> PhotoOut:
        return cls(
            id=p.id,
            sha256=p.sha256,
            external_id=p.external_id,
            created_at=p.created_at,
            created=created,
            faces=[PhotoFaceOut.of(f) for f in faces],
        )


class PhotoParams(RequestModel):
    model_config = ConfigDict(extra="forbid")
    external_id: str | None = Field(None, max_length=4096, description="Your id for the photo, e.g. a file path.")


class SearchParams(RequestModel):
    model_config = ConfigDict(extra="forbid")
    face_id: int | None = Field(
        None, ge=1, le=ROW_ID_MAX, description="An indexed photo face to search with (instead of an image)."
    )
    top_k: int = Field(10, ge=1, le=1000)
    threshold: float | None = Field(None, ge=0.0, le=2.0, description="Only faces at L2 distance <= this.")


class SimilarFaceOut(BaseModel):
    face: PhotoFaceOut
    distance: float
    similarity: float


class SearchResponse(BaseModel):
    model_id: str
    probe_face_id: int | None = Field(description="The face searched with, when given by id.")
    results: list[SimilarFaceOut]


class SubjectPhoto(BaseModel):
    photo: PhotoOut


class SubjectPhotoPage(BaseModel):
    items: list[PhotoOut] = Field(description="Photos (newest first), each with the faces of this subject.")
    next_cursor: str | None


class ClusterOut(BaseModel):
    id: int
    size: int
    sample_face_ids: list[int] = Field(description="A few of its faces, best quality first (for thumbnails).")


class ClusterPage(BaseModel):
    items: list[ClusterOut]
    total: int
    next_cursor: str | None


class ClusterDetail(BaseModel):
    id: int
    size: int
    faces: list[PhotoFaceOut]


class NameCluster(RequestModel):
    """Exactly one of ``name`` (a new subject) or ``subject_id`` (an existing one)."""

    model_config = ConfigDict(extra="forbid")
    name: str | None = Field(None, min_length=1, max_length=200)
    subject_id: str | None = Field(None, min_length=1, max_length=200)

    @model_validator(mode="after")
    def _one(self) -> NameCluster:
        if (self.name is None) == (self.subject_id is None):
            raise ValueError("give exactly one of `name` or `subject_id`")
        return self


class NamedClusterOut(BaseModel):
    subject_id: str
    subject_name: str
    faces: int = Field(description="Photo faces now named as the subject.")
    enrolled: int = Field(description="Of those, faces that passed the enrolment quality gate: new templates.")


class MergeClusters(RequestModel):
    model_config = ConfigDict(extra="forbid")
    cluster_id: int = Field(
        ge=1, le=ROW_ID_MAX, strict=True, description="The cluster whose faces move into this one (a JSON integer)."
    )


class RemovedFace(BaseModel):
    face_id: int
    cluster_id: int = Field(description="The new cluster of its own the face now is in.")


class ReclusterOut(BaseModel):
    faces: int
    clusters: int
    changed: int
    seconds: float


class Erased(BaseModel):
    erased: int = Field(description="Photo faces erased.")
