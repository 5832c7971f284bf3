"""The service's verbs: enrol, verify, identify, detect, embed. Synchronous, keyword-only, used by the routes
(in a worker thread) and by the CLI (directly on a local data dir).

Distances are L2 between unit embeddings in [0, 2]; a threshold is an L2 distance and
``distance <= threshold`` means the same person; similarity is ``1 - d**2 / 2``.
"""

from __future__ import annotations

import hashlib
import statistics
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from embeddings import Face, FaceAnalyzer, compare, distance_to_similarity
from embeddings.distance import pairwise_distances
from embeddings.errors import FaceRecError, ImageTooLarge, InvalidImage, LowQuality, MultipleFaces, NoFace
from service.gallery import Candidate, FaceRecord, Gallery, NewFace
from service.gallery.calibration import false_identification_rate, threshold_for_fir

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


_ENROL_LOCK = threading.Lock()
"""Serialises the duplicate re-check and the insert of :func:`enroll` in this process. The data dir is locked
to one process, so this is enough to stop two concurrent requests storing the same image twice."""


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
        with _ENROL_LOCK:
            keep: list[NewFace] = []
            for index, face_in in new:
                assert face_in.image_sha256 is not None
                existing = gallery.find_face_by_sha256(face_in.image_sha256, subject_id=subject_id)
                if existing is not None:  # enrolled by a concurrent request since the first check
                    result.rejected.append(
                        Rejection(
                            index,
                            "duplicate",
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


def probe_face(analyzer: FaceAnalyzer, image: bytes, *, aligned: bool = False) -> Face:
    """The face to compare: the largest detected one, or with ``aligned`` the whole image as an already aligned
    face crop (:meth:`FaceAnalyzer.aligned_face`, no detection)."""
    if aligned:
        return analyzer.aligned_face(image)
    return analyzer.single_face(image, largest=True, check_quality=False)


def verify_images(
    *, analyzer: FaceAnalyzer, image_a: bytes, image_b: bytes, threshold: float, aligned: bool = False
) -> VerifyResult:
    """Compare the largest face of each image (:func:`embeddings.compare`); ``aligned``: each image is an
    already aligned face crop."""
    a = probe_face(analyzer, image_a, aligned=aligned)
    b = probe_face(analyzer, image_b, aligned=aligned)
    v = compare(a.embedding, b.embedding, threshold)
    return VerifyResult(
        match=v.match,
        distance=v.distance,
        similarity=v.similarity,
        threshold=threshold,
        model_id=analyzer.model_id,
        face_a=a.box.to_dict(),
        face_b=b.box.to_dict(),
    )


def _face_ids(gallery: Gallery, subject_id: str, model_id: str) -> list[int]:
    return [r.id for r in gallery.list_faces(subject_id) if r.model_id == model_id]


def verify_subject(
    *, analyzer: FaceAnalyzer, gallery: Gallery, image: bytes, subject_id: str, threshold: float, aligned: bool = False
) -> VerifyResult:
    """Compare the image's largest face (``aligned``: the image as an aligned face crop) with every enrolled
    face of the subject.

    The decision uses the *median* distance, so one bad enrolment photo (too near or far) does not decide.
    A subject with no faces of this model is a :class:`NoFace` (422), found before the image is analysed.

    The distances come from one read of the embeddings. Per-face distances are reported only when they can be
    attributed: the subject's face ids of this model are read before and after the embeddings and must be
    equal and as many as the embeddings (ids are never reused and deletions are final, so the embeddings read
    in between are exactly those faces, in id order); otherwise ``distances`` is None.
    """
    subject = gallery.get_subject(subject_id)
    before = _face_ids(gallery, subject_id, analyzer.model_id)
    enrolled = gallery.face_embeddings(subject_id, model_id=analyzer.model_id)
    after = _face_ids(gallery, subject_id, analyzer.model_id)
    if len(enrolled) == 0:
        raise NoFace(f"subject {subject_id!r} has no enrolled faces to compare with")
    face = probe_face(analyzer, image, aligned=aligned)
    dists = pairwise_distances(face.embedding[None, :], enrolled)[0]
    d = float(statistics.median(float(x) for x in dists))
    per_face = (
        [{"face_id": i, "distance": float(x)} for i, x in zip(before, dists, strict=True)]
        if before == after and len(before) == len(dists)
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
    threshold_source: str = "fixed"
    gallery_faces: int = 0


THRESHOLD_SOURCES = ("request", "fixed", "max_fir")


@dataclass(frozen=True)
class ThresholdChoice:
    """The identify threshold and where it came from: ``"request"`` (given explicitly), ``"fixed"``
    (``FACEREC_THRESHOLD`` or the model card) or ``"max_fir"`` (tightened to keep the estimated
    false-identification rate at the gallery's size within ``FACEREC_MAX_FIR``)."""

    threshold: float
    source: str


def identify_threshold(
    *, requested: float | None, fixed: float, max_fir: float | None, gallery_size: int
) -> ThresholdChoice:
    """The open-set threshold policy of identify.

    An explicit ``requested`` threshold is used as given. Otherwise it is ``min(fixed,
    threshold_for_fir(max_fir, gallery_size))``: the fixed 1:1 threshold, tightened as the gallery grows so
    that a stranger is matched to someone with probability at most ``max_fir``. ``max_fir`` None or 0, an
    empty gallery or missing calibration tables leave the fixed threshold.
    """
    if requested is not None:
        return ThresholdChoice(float(requested), "request")
    if not max_fir or gallery_size <= 0:
        return ThresholdChoice(fixed, "fixed")
    try:
        adaptive = float(threshold_for_fir(max_fir, gallery_size))
    except (OSError, ValueError, KeyError):  # no or unreadable FAR table: fall back to the fixed threshold
        return ThresholdChoice(fixed, "fixed")
    return ThresholdChoice(adaptive, "max_fir") if adaptive < fixed else ThresholdChoice(fixed, "fixed")


def estimated_fir(threshold: float, gallery_size: int) -> float | None:
    """The gallery calibration's false-identification rate: the chance a stranger's nearest face is within
    ``threshold`` in a gallery of ``gallery_size`` faces (of the probe's model). ``None`` when unavailable."""
    if gallery_size <= 0:
        return None
    try:
        return float(false_identification_rate(threshold, gallery_size))
    except (OSError, ValueError, KeyError):  # no or unreadable FAR table: say nothing rather than fail
        return None


def identify(
    *,
    analyzer: FaceAnalyzer,
    gallery: Gallery,
    image: bytes,
    threshold: float | None,
    top_k: int,
    fixed_threshold: float | None = None,
    max_fir: float | None = None,
    aligned: bool = False,
) -> IdentifyResult:
    """Every face (largest first) with its nearest subjects and a match if within the threshold; ``aligned``:
    the image is one already aligned face crop (no detection).

    ``threshold`` given: used as is. None: :func:`identify_threshold` picks it from ``fixed_threshold``
    (default: the analyzer's) and ``max_fir`` at the gallery size, the number of faces of the analyzer's model
    (what :mod:`service.gallery.calibration` expects: it treats each face as one chance of a false match).
    """
    subjects = int(gallery.subject_count())
    size = int(gallery.face_count(analyzer.model_id))
    fixed = float(analyzer.threshold) if fixed_threshold is None else fixed_threshold
    choice = identify_threshold(requested=threshold, fixed=fixed, max_fir=max_fir, gallery_size=size)
    faces = embed(analyzer=analyzer, image=image, aligned=aligned)
    results: list[Identified] = []
    if faces:
        probes = np.stack([f.embedding for f in faces]).astype(np.float32)
        # the gallery ranks subjects by their nearest face: one candidate per subject, nearest first
        hits = gallery.search(probes, model_id=analyzer.model_id, top_k=top_k)
        for face, cands in zip(faces, hits, strict=True):
            match = cands[0] if cands and cands[0].distance <= choice.threshold else None
            results.append(Identified(face=face, match=match, candidates=cands))
    return IdentifyResult(
        faces=results,
        threshold=choice.threshold,
        top_k=top_k,
        model_id=analyzer.model_id,
        gallery_subjects=subjects,
        estimated_fir=estimated_fir(choice.threshold, size),
        threshold_source=choice.source,
        gallery_faces=size,
    )


# ---- detection and embedding ---------------------------------------------------------------------


def detect(*, analyzer: FaceAnalyzer, image: bytes) -> tuple[tuple[int, int], list[Any]]:
    """``((width, height), detections)`` of the upright image, largest face first."""
    rgb = analyzer.load_image(image)
    return (int(rgb.shape[1]), int(rgb.shape[0])), analyzer.detector.detect(rgb)


def embed(*, analyzer: FaceAnalyzer, image: bytes, aligned: bool = False) -> list[Face]:
    """Every face with its quality and 128-d unit embedding, largest first; ``aligned``: the image is one
    already aligned face crop, embedded without detection (:meth:`FaceAnalyzer.aligned_face`)."""
    return [analyzer.aligned_face(image)] if aligned else analyzer.analyze(image)
