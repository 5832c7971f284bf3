"""Gallery, library and service results -> response models (shared by the routes and the CLI's local mode)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from embeddings import Detection, Face
from embeddings.pose import estimate_pose
from service import recognition
from service.schemas import (
    BoxOut,
    DetectedFace,
    EmbeddedFace,
    FaceOut,
    IdentifiedFace,
    IdentifyResponse,
    LandmarksOut,
    Match,
    PoseOut,
    QualityOut,
    SubjectOut,
    VerifyResponse,
)


def subject_out(s: Any) -> SubjectOut:
    return SubjectOut(
        id=s.id,
        name=s.name,
        metadata=dict(s.metadata or {}),
        created_at=s.created_at,
        updated_at=s.updated_at,
        face_count=s.face_count,
        sample_face_id=s.sample_face_id,
    )


def face_out(r: Any) -> FaceOut:
    """A stored face (a :class:`service.gallery.FaceRecord`) as the API shows it."""
    return FaceOut.model_validate(r, from_attributes=True)


def pose_out(d: Detection) -> PoseOut | None:
    """The head pose of a detection (:mod:`embeddings.pose`), or None without usable landmarks."""
    pose = estimate_pose(d.landmarks, d.box)
    return PoseOut(**pose.to_dict()) if pose is not None else None


def detected(d: Detection) -> DetectedFace:
    return DetectedFace(
        box=BoxOut(**d.box.to_dict()),
        landmarks=LandmarksOut(**d.landmarks.to_dict()),
        confidence=d.confidence,
        pose=pose_out(d),
    )


def face_fields(f: Face) -> dict[str, Any]:
    """A face's ``box``, ``landmarks``, ``confidence`` and ``pose`` fields; all but the box are null for an
    aligned input (``face=aligned``: no detector ran)."""
    d = f.detection
    aligned = f.aligned_input
    return {
        "box": BoxOut(**d.box.to_dict()),
        "landmarks": None if aligned else LandmarksOut(**d.landmarks.to_dict()),
        "confidence": None if aligned else d.confidence,
        "pose": None if aligned else pose_out(d),
    }


def quality_out(f: Face) -> QualityOut:
    """A face's quality against the enrolment minimums (``confidence`` null for an aligned input)."""
    q = f.quality
    return QualityOut(
        face_size=q.face_size,
        confidence=None if f.aligned_input else q.confidence,
        sharpness=q.sharpness,
        reasons=list(q.reasons),
        pose=PoseOut(yaw=q.yaw, pitch=q.pitch, roll=q.roll)
        if q.yaw is not None and q.pitch is not None and q.roll is not None
        else None,
    )


def embedded(f: Face) -> EmbeddedFace:
    """A face with its quality and embedding (:func:`face_fields` for the detector's part)."""
    return EmbeddedFace(**face_fields(f), quality=quality_out(f), embedding=f.embedding.tolist())


def match_out(c: Any) -> Match:
    return Match(
        subject_id=c.subject_id,
        name=c.subject_name,
        distance=float(c.distance),
        similarity=float(c.similarity),
        face_id=c.face_id,
        face_distance=getattr(c, "face_distance", None),
        score=getattr(c, "score", None),
    )


def verify_response(result: recognition.VerifyResult) -> VerifyResponse:
    """The API's JSON for a verification (also used by the CLI): the result's fields, one for one."""
    return VerifyResponse.model_validate(asdict(result))


def identify_response(result: recognition.IdentifyResult) -> IdentifyResponse:
    """The API's JSON for an identification (also used by the CLI)."""
    return IdentifyResponse(
        faces=[
            IdentifiedFace(
                **face_fields(f.face),
                quality=quality_out(f.face),
                match=match_out(f.match) if f.match else None,
                candidates=[match_out(c) for c in f.candidates],
            )
            for f in result.faces
        ],
        threshold=result.threshold,
        top_k=result.top_k,
        model_id=result.model_id,
        gallery_subjects=result.gallery_subjects,
        gallery_faces=result.gallery_faces,
        threshold_source=result.threshold_source,
        threshold_scale=result.threshold_scale,
        estimated_false_identification_rate=result.estimated_fir,
    )
