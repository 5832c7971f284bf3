"""The service's verbs: enrol, verify, identify, detect, embed. Synchronous, keyword-only, used by the routes
(in a worker thread) and by the CLI (directly on a local data dir).

Distances are L2 between unit embeddings in [0, 2]; a threshold is an L2 distance and
``distance <= threshold`` means the same person; similarity is ``1 - d**2 / 2``.
"""

from __future__ import annotations

import hashlib
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from embeddings import Face, FaceAnalyzer, distance_to_similarity
from embeddings.distance import pairwise_distances
from embeddings.errors import FaceRecError, ImageTooLarge, InvalidImage, LowQuality, MultipleFaces, NoFace
from service.gallery import Candidate, FaceRecord, NewFace
from service.gallery.calibration import false_identification_rate

REJECT_CODES: list[tuple[type[FaceRecError], str]] = [
    (ImageTooLarge, "payload_too_large"),
    (InvalidImage, "invalid_image"),
    (NoFace, "no_face"),
    (MultipleFaces, "multiple_faces"),
    (LowQuality, "low_quality"),
]


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def face_summary(face: Face) -> tuple[dict[str, float], dict[str, Any]]:
    """The box and quality of a face as stored in the gallery."""
    q = face.quality
    quality = {"face_size": q.face_size, "confidence": q.confidence, "sharpness": q.sharpness}
    return face.box.to_dict(), quality


# ---- enrolment -----------------------------------------------------------------------------------


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


def enroll(
    *, analyzer: FaceAnalyzer, gallery: Any, subject_id: str, images: Sequence[bytes], largest: bool = False
) -> EnrollResult:
    """Enrol each image's one acceptable face into ``subject_id``; the others are listed with a reason code.

    An image whose sha256 is already enrolled for this subject (or repeated in the request) is a ``duplicate``
    and is not analysed again. The good faces are stored in one atomic gallery call.
    """
    gallery.get_subject(subject_id)  # 404 before any work
    result = EnrollResult()
    new: list[NewFace] = []
    seen: dict[str, int] = {}
    for index, data in enumerate(images):
        digest = sha256_bytes(data)
        existing = gallery.find_face_by_sha256(digest, subject_id=subject_id)
        if existing is not None or digest in seen:
            where = f"face {existing.id}" if existing is not None else f"image {seen[digest]} of this request"
            result.rejected.append(
                Rejection(
                    index,
                    "duplicate",
                    f"this image is already enrolled ({where})",
                    existing.id if existing is not None else None,
                )
            )
            continue
        seen[digest] = index
        try:
            face = analyzer.single_face(data, largest=largest, check_quality=True)
        except FaceRecError as exc:
            code = next((c for cls, c in REJECT_CODES if isinstance(exc, cls)), "invalid_image")
            result.rejected.append(Rejection(index, code, exc.message))
            continue
        box, quality = face_summary(face)
        new.append(
            NewFace(
                embedding=face.embedding,
                model_id=analyzer.model_id,
                box=box,
                quality=quality,
                image_sha256=digest,
            )
        )
    if new:
        result.faces = list(gallery.add_faces(subject_id, new))
    return result


# ---- verification --------------------------------------------------------------------------------


@dataclass
class VerifyResult:
    match: bool
    distance: float
    similarity: float
    threshold: float
    model_id: str
    face_a: dict[str, float] | None = None
    face_b: dict[str, float] | None = None
    subject_id: str | None = None
    subject_name: str | None = None
    distances: list[dict[str, Any]] | None = None


def verify_images(
    *, analyzer: FaceAnalyzer, image_a: bytes, image_b: bytes, threshold: float
) -> VerifyResult:
    """Compare the largest face of each image."""
    a = analyzer.single_face(image_a, largest=True, check_quality=False)
    b = analyzer.single_face(image_b, largest=True, check_quality=False)
    d = float(np.linalg.norm(a.embedding - b.embedding))
    return VerifyResult(
        match=d <= threshold,
        distance=d,
        similarity=distance_to_similarity(d),
        threshold=threshold,
        model_id=analyzer.model_id,
        face_a=a.box.to_dict(),
        face_b=b.box.to_dict(),
    )


def verify_subject(
    *, analyzer: FaceAnalyzer, gallery: Any, image: bytes, subject_id: str, threshold: float
) -> VerifyResult:
    """Compare the image's largest face with every enrolled face of the subject.

    The decision uses the *median* distance, so one bad enrolment photo (too near or far) does not decide.
    A subject with no faces of this model is a :class:`NoFace` (422).
    """
    subject = gallery.get_subject(subject_id)
    face = analyzer.single_face(image, largest=True, check_quality=False)
    records = [r for r in gallery.list_faces(subject_id) if r.model_id == analyzer.model_id]
    enrolled = gallery.face_embeddings(subject_id, model_id=analyzer.model_id)
    if len(enrolled) == 0:
        raise NoFace(f"subject {subject_id!r} has no enrolled faces to compare with")
    dists = pairwise_distances(face.embedding[None, :], enrolled)[0]
    d = float(statistics.median(float(x) for x in dists))
    per_face = (
        [{"face_id": r.id, "distance": float(x)} for r, x in zip(records, dists, strict=False)]
        if len(records) == len(dists)
        else None
    )
    return VerifyResult(
        match=d <= threshold,
        distance=d,
        similarity=distance_to_similarity(d),
        threshold=threshold,
        model_id=analyzer.model_id,
        face_a=face.box.to_dict(),
        subject_id=subject.id,
        subject_name=subject.name,
        distances=per_face,
    )


# ---- identification ------------------------------------------------------------------------------


@dataclass
class Identified:
    face: Face
    match: Candidate | None
    candidates: list[Candidate]


@dataclass
class IdentifyResult:
    faces: list[Identified]
    threshold: float
    top_k: int
    model_id: str
    gallery_subjects: int
    estimated_fir: float | None


def estimated_fir(threshold: float, subjects: int) -> float | None:
    """The gallery calibration's false-identification rate: the chance a stranger's nearest subject is within
    ``threshold``, with the gallery size taken as the number of subjects. ``None`` when unavailable."""
    if subjects <= 0:
        return None
    try:
        return float(false_identification_rate(threshold, subjects))
    except (OSError, ValueError, KeyError):  # no or unreadable FAR table: say nothing rather than fail
        return None


def identify(
    *, analyzer: FaceAnalyzer, gallery: Any, image: bytes, threshold: float, top_k: int
) -> IdentifyResult:
    """Every face (largest first) with its nearest subjects and a match if within ``threshold``."""
    faces = analyzer.analyze(image)
    subjects = int(gallery.stats().subjects)
    results: list[Identified] = []
    if faces:
        probes = np.stack([f.embedding for f in faces]).astype(np.float32)
        # the gallery ranks subjects by their nearest face: one candidate per subject, nearest first
        hits = gallery.search(probes, model_id=analyzer.model_id, top_k=top_k)
        for face, cands in zip(faces, hits, strict=True):
            match = cands[0] if cands and cands[0].distance <= threshold else None
            results.append(Identified(face=face, match=match, candidates=cands))
    return IdentifyResult(
        faces=results,
        threshold=threshold,
        top_k=top_k,
        model_id=analyzer.model_id,
        gallery_subjects=subjects,
        estimated_fir=estimated_fir(threshold, subjects),
    )


# ---- detection and embedding ---------------------------------------------------------------------


def detect(*, analyzer: FaceAnalyzer, image: bytes) -> tuple[tuple[int, int], list[Any]]:
    """``((width, height), detections)`` of the upright image, largest face first."""
    rgb = analyzer.load_image(image)
    return (int(rgb.shape[1]), int(rgb.shape[0])), analyzer.detector.detect(rgb)


def embed(*, analyzer: FaceAnalyzer, image: bytes) -> list[Face]:
    """Every face with its quality and 128-d unit embedding, largest first."""
    return analyzer.analyze(image)
