"""Enrolment: each image's one acceptable face stored into a subject, the others listed with a reason code."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from embeddings import Face, FaceAnalyzer
from embeddings import errors as lib_errors
from service.gallery import FaceRecord, Gallery, NewFace

_e = lib_errors
REJECTIONS: tuple[type[_e.FaceRecError], ...] = (_e.ImageTooLarge, _e.InvalidImage, _e.NoFace, _e.MultipleFaces)
REJECTIONS += (_e.BadPose, _e.LowQuality)
"""Library errors that reject one image of an enrolment, reported with the error's ``code``."""

DUPLICATE = "duplicate"
"""The reject code of an image already enrolled for the subject (or repeated in the request)."""

REJECT_CODES: tuple[str, ...] = (*(cls.code for cls in REJECTIONS), DUPLICATE)
"""Every code an enrolment's ``rejected`` entry may carry."""


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def face_summary(face: Face) -> tuple[dict[str, float], dict[str, Any]]:
    """The box and quality of a face as stored in the gallery."""
    q = face.quality
    quality: dict[str, Any] = {"face_size": q.face_size, "confidence": q.confidence, "sharpness": q.sharpness}
    if q.yaw is not None:
        quality.update(yaw=q.yaw, pitch=q.pitch, roll=q.roll)
    return face.box.to_dict(), quality


@dataclass
class Rejection:
    index: int
    code: str
    message: str
    face_id: int | None = None


@dataclass
class EnrollResult:
    faces: list[FaceRecord] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)


_ENROL_LOCK = threading.Lock()
"""Serialises the duplicate re-check and the insert of :func:`enroll` in this process; the gallery's
``subject_writes`` does the same across the processes sharing a database (so at most one of this process's
threads holds a database connection for it at a time)."""


def enroll(
    *,
    analyzer: FaceAnalyzer,
    gallery: Gallery,
    subject_id: str,
    images: Sequence[bytes],
    largest: bool = False,
    store_crop: bool = True,
) -> EnrollResult:
    """Enrol each image's one acceptable face into ``subject_id``; the others are listed with a reason code.

    ``store_crop`` (``FACEREC_STORE_CROPS``) stores each face's aligned 160x160 crop with it, in the same
    transaction, so that ``facerec reindex`` can re-embed the gallery with another model later.

    An image whose sha256 is already enrolled for this subject (or repeated in the request) is a ``duplicate``
    and is not analysed again. The images are analysed outside any lock; then, under a process-wide lock, the
    sha256s are checked again (a concurrent request may have enrolled the same image meanwhile: that one is
    reported as a ``duplicate`` here) and the good faces are stored in one atomic gallery call.
    """
    gallery.get_subject(subject_id)  # 404 before any work
    result = EnrollResult()
    new: list[tuple[int, NewFace]] = []
    seen: dict[str, int] = {}
    for index, data in enumerate(images):
        digest = sha256_bytes(data)
        existing = gallery.find_face_by_sha256(digest, subject_id=subject_id)
        if existing is not None or digest in seen:
            message = (
                f"this image is already enrolled (face {existing.id})"
                if existing is not None
                else f"the same image as image {seen[digest]} of this request"  # which may itself be refused
            )
            result.rejected.append(Rejection(index, DUPLICATE, message, existing.id if existing is not None else None))
            continue
        seen[digest] = index
        try:
            face = analyzer.single_face(data, largest=largest, check_quality=True)
        except lib_errors.FaceRecError as exc:
            code = exc.code if isinstance(exc, REJECTIONS) else lib_errors.InvalidImage.code
            result.rejected.append(Rejection(index, code, exc.message))
            continue
        box, quality = face_summary(face)
        new.append(
            (
                index,
                NewFace(
                    embedding=face.embedding,
                    model_id=analyzer.model_id,
                    box=box,
                    quality=quality,
                    image_sha256=digest,
                    crop=face.crop if store_crop else None,
                ),
            )
        )
    if new:
        with _ENROL_LOCK, gallery.subject_writes(subject_id):
            keep: list[NewFace] = []
            for index, face_in in new:
                assert face_in.image_sha256 is not None
                existing = gallery.find_face_by_sha256(face_in.image_sha256, subject_id=subject_id)
                if existing is not None:  # enrolled by a concurrent request since the first check
                    result.rejected.append(
                        Rejection(
                            index,
                            DUPLICATE,
                            f"this image is already enrolled (face {existing.id})",
                            existing.id,
                        )
                    )
                else:
                    keep.append(face_in)
            if keep:
                result.faces = list(gallery.add_faces(subject_id, keep))
        result.rejected.sort(key=lambda r: r.index)
    return result
