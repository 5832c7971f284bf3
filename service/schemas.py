"""Request and response models, one family per resource.

Boxes are ``{"x", "y", "width", "height"}`` in pixels of the upright image; landmarks are ``[x, y]`` pixels;
distances are L2 between unit embeddings in [0, 2] (0 = identical); similarity is ``1 - d**2 / 2``;
a threshold is an L2 distance, ``distance <= threshold`` meaning the same person.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from service.nul_guard import RequestModel
from service.recognition import REJECT_CODES, ThresholdScale, ThresholdSource


class ErrorDetail(BaseModel):
    code: str = Field(examples=["no_face"])
    message: str = Field(examples=["no face was found in the image"])


class ErrorResponse(BaseModel):
    """Every failure has this shape."""

    error: ErrorDetail


# ---- geometry ------------------------------------------------------------------------------------


class BoxOut(BaseModel):
    """A face box in pixels of the upright image: top-left corner and size."""

    x: float
    y: float
    width: float
    height: float


class LandmarksOut(BaseModel):
    """Five points ``[x, y]`` in pixels; ``left_eye`` is the eye on the image's left."""

    left_eye: list[float]
    right_eye: list[float]
    nose: list[float]
    mouth_left: list[float]
    mouth_right: list[float]


class PoseOut(BaseModel):
    """Head pose in degrees from the five landmarks, 0 = facing the camera; an estimate (docs/OPENSET.md)."""

    yaw: float = Field(description="Turn: > 0 the nose points to the image's right; a profile is about +-90.")
    pitch: float = Field(description="Nod: > 0 the nose points up.")
    roll: float = Field(description="In-plane tilt: > 0 the head leans clockwise in the image.")


class QualityOut(BaseModel):
    """``face_size``: shorter box side, px; ``sharpness``: Laplacian variance; ``reasons``: minimums missed"""

    face_size: float
    confidence: float | None = Field(description="Detector confidence; null for `face=aligned` (no detector ran).")
    sharpness: float
    reasons: list[str]
    pose: PoseOut | None = Field(None, description="Head pose; null for `face=aligned` (no landmarks).")


class DetectedFace(BaseModel):
    box: BoxOut
    landmarks: LandmarksOut
    confidence: float = Field(description="Detector confidence in [0, 1].")
    pose: PoseOut | None = Field(None, description="Head pose from the landmarks; null when they are unknown.")


class DetectResponse(BaseModel):
    width: int = Field(description="Width of the upright image, px.")
    height: int
    faces: list[DetectedFace] = Field(description="Largest first.")


ALIGNED_NULL = "null for `face=aligned` (no detector ran)."


class EmbeddedFace(DetectedFace):
    landmarks: LandmarksOut | None = Field(description="Detector landmarks; " + ALIGNED_NULL)  # type: ignore[assignment]
    confidence: float | None = Field(description="Detector confidence in [0, 1]; " + ALIGNED_NULL)  # type: ignore[assignment]
    quality: QualityOut
    embedding: list[float] = Field(description="128 floats, unit L2 norm.")


FACE_ALIGNED = (
    "`aligned`: the image is one already aligned face crop (the face's detector box plus the pipeline's 15% "
    "margin, eye line level, any size, at least 20 px a side, sides within 2x): detection is skipped and the crop "
    "is resized to 160x160."
)

FACE_DETECTED = {"all": "every detected face", "largest": "the largest detected face of each image"}
"""What each default ``face`` value takes (the detector runs)."""


def face_description(default: str) -> str:
    """The ``face`` parameter's description when ``default`` (a :data:`FACE_DETECTED` key) is its default."""
    return f"`{default}` (default): {FACE_DETECTED[default]}. {FACE_ALIGNED}"


class DetectParams(RequestModel):
    """``/v1/detect`` takes no field but its image: any other is refused."""

    model_config = ConfigDict(extra="forbid")


class EmbedParams(RequestModel):
    model_config = ConfigDict(extra="forbid")
    face: Literal["all", "aligned"] = Field("all", description=face_description("all"))


class EmbedResponse(BaseModel):
    model_id: str
    faces: list[EmbeddedFace]


# ---- subjects and faces --------------------------------------------------------------------------


MAX_METADATA_DEPTH = 32
"""Deepest nesting of lists/objects accepted in a subject's metadata."""


def check_metadata(value: Any, depth: int = 0) -> Any:
    """Refuse metadata that cannot round-trip as JSON: nesting deeper than ``MAX_METADATA_DEPTH``, NaN or
    infinite numbers, and strings (or keys) that are not valid Unicode (lone surrogates)."""
    if depth > MAX_METADATA_DEPTH:
        raise ValueError(f"metadata is nested deeper than {MAX_METADATA_DEPTH} levels")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError("metadata numbers must be finite (no NaN or Infinity)")
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError("metadata strings must be valid Unicode (no lone surrogates)") from None
    if isinstance(value, dict):
        for key, item in value.items():
            check_metadata(key, depth + 1)
            check_metadata(item, depth + 1)
    elif isinstance(value, list):
        for item in value:
            check_metadata(item, depth + 1)
    return value


class SubjectCreate(RequestModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"name": "Ada Lovelace", "metadata": {"team": "math"}}]},
    )
    name: str = Field(min_length=1, max_length=200)
    metadata: dict[str, Any] = Field(default_factory=dict)

    @field_validator("metadata")
    @classmethod
    def _valid_metadata(cls, value: Any) -> Any:
        return check_metadata(value)


class SubjectUpdate(RequestModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"name": "Ada King"}]})
    name: str | None = Field(None, min_length=1, max_length=200)
    metadata: dict[str, Any] | None = None

    @field_validator("metadata")
    @classmethod
    def _valid_metadata(cls, value: Any) -> Any:
        return check_metadata(value)


class SubjectOut(BaseModel):
    id: str
    name: str
    metadata: dict[str, Any]
    created_at: datetime | str
    updated_at: datetime | str
    face_count: int
    sample_face_id: int | None = Field(
        None,
        description="One of the subject's faces for a thumbnail: the earliest enrolled (lowest id); its crop is "
        "`GET /v1/faces/{face_id}/crop`. Null when the subject has no face.",
    )


class SubjectPage(BaseModel):
    items: list[SubjectOut]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null on the last page.")


class FaceOut(BaseModel):
    id: int
    subject_id: str
    model_id: str
    box: dict[str, float] | None
    quality: dict[str, Any] | None
    image_sha256: str | None
    created_at: datetime | str


class FaceList(BaseModel):
    items: list[FaceOut]


class Rejected(BaseModel):
    index: int = Field(description="Position of the image in the request, from 0.")
    code: str = Field(json_schema_extra={"enum": list(REJECT_CODES)})
    message: str
    face_id: int | None = Field(None, description="For `duplicate`: the face already enrolled from these bytes.")


class EnrollResponse(BaseModel):
    faces: list[FaceOut]
    rejected: list[Rejected]


class EnrollParams(RequestModel):
    model_config = ConfigDict(extra="forbid")
    face: Literal["single", "largest"] = Field(
        "single",
        description="`single`: an image with several faces is rejected; `largest`: take the largest.",
    )


# ---- recognition ---------------------------------------------------------------------------------


class RecognitionParams(RequestModel):
    model_config = ConfigDict(extra="forbid")
    threshold: float | None = Field(None, ge=0.0, le=2.0, description="L2 distance; default: the service's.")


class VerifyParams(RecognitionParams):
    subject_id: str | None = Field(None, description="Compare `image` with this subject's enrolled faces.")
    face: Literal["largest", "aligned"] = Field("largest", description=face_description("largest"))


class IdentifyParams(RecognitionParams):
    top_k: int | None = Field(None, ge=1, le=100, description="Candidates per face; default: the service's.")
    face: Literal["all", "aligned"] = Field("all", description=face_description("all"))


class FaceDistance(BaseModel):
    face_id: int
    distance: float


class VerifyResponse(BaseModel):
    match: bool = Field(description="`distance <= threshold`.")
    distance: float = Field(
        description="L2 in [0, 2]; against a subject, to its template (the normalised mean of its faces)."
    )
    similarity: float = Field(description="`1 - distance**2 / 2`.")
    threshold: float
    model_id: str
    face_a: BoxOut | None = Field(None, description="The face used from `image_a` (or `image`).")
    face_b: BoxOut | None = Field(None, description="The face used from `image_b` (two-image mode).")
    subject_id: str | None = None
    subject_name: str | None = None
    distances: list[FaceDistance] | None = Field(None, description="Subject mode: distance to each face.")


class Match(BaseModel):
    subject_id: str
    name: str
    distance: float
    similarity: float
    face_id: int | None = Field(None, description="The enrolled face nearest the probe.")
    face_distance: float | None = Field(
        None, description="L2 distance to that face (`distance` is the person-level score: to the subject's template)."
    )
    score: float | None = Field(
        None,
        description=(
            "What `threshold` is compared with: the normalised score (`distance` minus the mean of the probe's and "
            "the subject's spread to the model's cohort; lower = more alike) when `threshold_scale` is "
            "`normalised`, else `distance`. Candidates are ranked by it."
        ),
    )


class IdentifiedFace(BaseModel):
    box: BoxOut
    landmarks: LandmarksOut | None = Field(description="Detector landmarks; " + ALIGNED_NULL)
    confidence: float | None = Field(description="Detector confidence in [0, 1]; " + ALIGNED_NULL)
    pose: PoseOut | None = Field(None, description="Head pose from the landmarks; " + ALIGNED_NULL)
    quality: QualityOut | None = Field(
        None,
        description=(
            "The probe face against the enrolment minimums. Non-empty `reasons` do not stop identify; they say why "
            "a face may go unnamed: `pose` (turned more than FACEREC_MAX_ENROL_YAW_DEG: accuracy falls beyond "
            "45 degrees, docs/OPENSET.md), `face_too_small`, `blurry`, `low_confidence`. Ask for a better photo."
        ),
    )
    match: Match | None = Field(description="The nearest subject if within the threshold; null = unknown.")
    candidates: list[Match] = Field(description="Nearest subjects, best first, one entry per subject.")


class IdentifyResponse(BaseModel):
    faces: list[IdentifiedFace]
    threshold: float = Field(description="An L2 distance or a normalised score, as `threshold_scale` says.")
    top_k: int
    model_id: str
    gallery_subjects: int
    gallery_faces: int = Field(
        0, description="Faces of this model in the gallery: the gallery size of the open-set estimate."
    )
    threshold_source: ThresholdSource = Field(
        "fixed",
        description=(
            "How `threshold` was chosen: given in the request, the fixed threshold (FACEREC_THRESHOLD or the "
            "model card's), lowered to keep the estimated false-identification rate within FACEREC_MAX_FIR, or "
            "`uncalibrated`: the fixed threshold because this model has no calibration tables "
            "(`facerec calibrate`), so no estimate exists."
        ),
    )
    threshold_scale: ThresholdScale = Field(
        "distance",
        description=(
            "`distance`: `threshold` is an L2 distance compared with each match's `distance`. `normalised`: it is "
            "a normalised score compared with `score` (FACEREC_MAX_FIR with a model that has a cohort "
            "normalisation), and a match's `distance` must also be within the fixed threshold."
        ),
    )
    estimated_false_identification_rate: float | None = Field(
        None,
        description=(
            "Chance an unknown face is matched to someone at this threshold and gallery size (the model's own "
            "calibration tables; null when it has none)."
        ),
    )


# ---- health --------------------------------------------------------------------------------------


class Health(BaseModel):
    status: Literal["ok"] = "ok"


class Readiness(BaseModel):
    ready: bool
    model: bool
    gallery: bool
    model_id: str | None = None
    threshold: float | None = None
    reason: str | None = Field(
        default=None,
        description="Why not ready: the model is still loading, the model failed to load (the log has the details; "
        "a restart is needed), the gallery is closed, or the gallery's database (or vector index) is unavailable "
        "(it comes back by itself).",
    )
