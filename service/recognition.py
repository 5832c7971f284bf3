"""The service's verbs: enrol, verify, identify, detect, embed. Synchronous, keyword-only, used by the routes
(in a worker thread) and by the CLI (directly on a local data dir).

Distances are L2 between unit embeddings in [0, 2]; a threshold is an L2 distance and
``distance <= threshold`` means the same person; similarity is ``1 - d**2 / 2``.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from embeddings import Face, FaceAnalyzer, compare, distance_to_similarity
from embeddings.distance import pairwise_distances
from embeddings.errors import (
    BadPose,
    FaceRecError,
    ImageTooLarge,
    InvalidImage,
    LowQuality,
    MultipleFaces,
    NoFace,
)
from service.gallery import Candidate, FaceRecord, Gallery, NewFace
from service.gallery.calibration import Calibration, comparisons, load_calibration, open_set_estimate
from service.gallery.errors import ModelMismatch, SubjectNotFound
from service.gallery.matching import RULE, quality_weight, subject_distances

RESCORE_CANDIDATES = 20
"""Identify rescores at least this many nearest subjects (by nearest face, from the index) with the person-level
rule: the subject with the best template is almost always among them."""

REJECTIONS: tuple[type[FaceRecError], ...] = (ImageTooLarge, InvalidImage, NoFace, MultipleFaces, BadPose, LowQuality)
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
                    DUPLICATE,
                    f"this image is already enrolled ({where})",
                    existing.id if existing is not None else None,
                )
            )
            continue
        seen[digest] = index
        try:
            face = analyzer.single_face(data, largest=largest, check_quality=True)
        except FaceRecError as exc:
            code = exc.code if isinstance(exc, REJECTIONS) else InvalidImage.code
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


def _weights(gallery: Any, subject_id: str, model_id: str, count: int) -> list[float] | None:
    """Per-face quality weights, only for the ``weighted`` rule (None otherwise, or when the faces listed do not
    line up with the ``count`` embeddings read)."""
    if RULE != "weighted":
        return None
    weights = [quality_weight(r.quality) for r in gallery.list_faces(subject_id) if r.model_id == model_id]
    return weights if len(weights) == count else None


def verify_subject(
    *, analyzer: FaceAnalyzer, gallery: Gallery, image: bytes, subject_id: str, threshold: float, aligned: bool = False
) -> VerifyResult:
    """Compare the image's largest face (``aligned``: the image as an aligned face crop) with every enrolled
    face of the subject.

    The decision uses the person-level score (:data:`service.gallery.matching.RULE`: the distance to the
    subject's template, the normalised mean of its faces), the same rule identify uses, so every enrolled photo
    counts and no single one decides. A subject with no faces of this model is a :class:`NoFace` (422), found
    before the image is analysed.

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
    attributed = before == after and len(before) == len(dists)
    d = float(
        subject_distances(
            face.embedding[None, :],
            enrolled,
            rule=RULE,
            weights=_weights(gallery, subject_id, analyzer.model_id, len(enrolled)),
        )[0]
    )
    per_face = (
        [{"face_id": i, "distance": float(x)} for i, x in zip(before, dists, strict=True)] if attributed else None
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


@dataclass(frozen=True)
class SubjectMatch:
    """A candidate subject scored with the person-level rule: ``distance`` (L2, the rule's score) and its
    ``similarity``; ``face_id`` and ``face_distance``: the subject's nearest enrolled face and its distance."""

    subject_id: str
    subject_name: str
    face_id: int
    distance: float
    similarity: float
    face_distance: float


ThresholdSource = Literal["request", "fixed", "max_fir", "uncalibrated"]
"""Where identify's threshold came from (see :class:`ThresholdChoice`)."""


@dataclass
class Identified:
    face: Face
    match: SubjectMatch | None
    candidates: list[SubjectMatch]


@dataclass
class IdentifyResult:
    faces: list[Identified]
    threshold: float
    top_k: int
    model_id: str
    gallery_subjects: int
    estimated_fir: float | None
    threshold_source: ThresholdSource = "fixed"
    gallery_faces: int = 0


@dataclass(frozen=True)
class ThresholdChoice:
    """The identify threshold and where it came from: ``"request"`` (given explicitly), ``"fixed"``
    (``FACEREC_THRESHOLD`` or the model card), ``"max_fir"`` (tightened to keep the estimated
    false-identification rate at the gallery's size within ``FACEREC_MAX_FIR``) or ``"uncalibrated"`` (the
    fixed threshold, because the model has no calibration tables: no FIR estimate exists for it)."""

    threshold: float
    source: ThresholdSource


def identify_threshold(
    *,
    requested: float | None,
    fixed: float,
    max_fir: float | None,
    calibration: Calibration | None,
    subjects: int,
    faces: int,
) -> ThresholdChoice:
    """The open-set threshold policy of identify.

    An explicit ``requested`` threshold is used as given. Otherwise it is ``min(fixed,
    calibration.threshold_for_fir(max_fir, N))`` with ``N`` what the rule compares against in a gallery of
    ``subjects`` subjects holding ``faces`` faces (:func:`service.gallery.calibration.comparisons`): the fixed
    1:1 threshold, tightened as the gallery grows so that a stranger is named with probability at most
    ``max_fir``. ``max_fir`` None or 0 or an empty gallery leave the fixed threshold; a model without
    calibration tables too, reported as ``uncalibrated``.
    """
    if requested is not None:
        return ThresholdChoice(float(requested), "request")
    if not max_fir or subjects <= 0:
        return ThresholdChoice(fixed, "fixed")
    if calibration is None:
        return ThresholdChoice(fixed, "uncalibrated")
    adaptive = calibration.threshold_for_fir(max_fir, comparisons(calibration.rule, subjects, faces))
    return ThresholdChoice(adaptive, "max_fir") if adaptive < fixed else ThresholdChoice(fixed, "fixed")


def rescore(
    gallery: Any, probe: npt.NDArray[np.float32], candidates: Sequence[Candidate], *, model_id: str, top_k: int
) -> list[SubjectMatch]:
    """The index's nearest subjects rescored with the person-level rule (each subject's faces read with
    :meth:`Gallery.face_embeddings`), best first, at most ``top_k``. A subject erased meanwhile is dropped."""
    out: list[SubjectMatch] = []
    for c in candidates:
        try:
            embs = gallery.face_embeddings(c.subject_id, model_id=model_id)
        except (SubjectNotFound, ModelMismatch):
            continue
        if len(embs) == 0:
            continue
        weights = _weights(gallery, c.subject_id, model_id, len(embs))
        d = float(subject_distances(probe[None, :], embs, rule=RULE, weights=weights)[0])
        out.append(SubjectMatch(c.subject_id, c.subject_name, c.face_id, d, distance_to_similarity(d), c.distance))
    out.sort(key=lambda m: m.distance)
    return out[:top_k]


@dataclass(frozen=True, slots=True)
class OpenSetPolicy:
    """Identify's open-set decision rule at the gallery's current size: the threshold (and where it came from),
    the FIR estimate it carries, and the counts it was computed for (subjects with faces of the model, faces)."""

    choice: ThresholdChoice
    estimated_fir: float | None
    subjects: int
    faces: int


def open_set_policy(
    gallery: Gallery, *, model_id: str, fixed: float, max_fir: float | None, requested: float | None = None
) -> OpenSetPolicy:
    """The threshold identify uses for ``model_id`` now (:func:`identify_threshold` with the model's own tables)
    and its FIR estimate; shared by ``POST /v1/identify`` and the video/stream track decisions."""
    subjects = int(gallery.subject_count())
    size = int(gallery.face_count(model_id))
    people = min(subjects, size)
    calibration = load_calibration(model_id)
    choice = identify_threshold(
        requested=requested, fixed=fixed, max_fir=max_fir, calibration=calibration, subjects=people, faces=size
    )
    return OpenSetPolicy(choice, open_set_estimate(calibration, choice.threshold, people, size), subjects, size)


def rank_subjects(
    gallery: Gallery, probes: npt.NDArray[np.float32], *, model_id: str, top_k: int
) -> list[list[SubjectMatch]]:
    """For each probe row: the nearest subjects under the person-level rule, best first, at most ``top_k``. The
    index ranks subjects by their nearest face; the rule ranks the ``max(top_k, RESCORE_CANDIDATES)`` nearest of
    those again (:func:`rescore`)."""
    hits = gallery.search(probes, model_id=model_id, top_k=max(top_k, RESCORE_CANDIDATES))
    return [
        rescore(gallery, probe, cands, model_id=model_id, top_k=top_k)
        for probe, cands in zip(probes, hits, strict=True)
    ]


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

    Subjects are scored with the person-level rule (:data:`service.gallery.matching.RULE`): the index's
    ``max(top_k, RESCORE_CANDIDATES)`` nearest subjects are rescored from their faces and ranked again.

    ``threshold`` given: used as is. None: :func:`identify_threshold` picks it from ``fixed_threshold``
    (default: the analyzer's), ``max_fir`` and the model's own calibration tables at the gallery size (subjects
    with faces of the analyzer's model, bounded by the subject and face counts).
    """
    fixed = float(analyzer.threshold) if fixed_threshold is None else fixed_threshold
    policy = open_set_policy(gallery, model_id=analyzer.model_id, fixed=fixed, max_fir=max_fir, requested=threshold)
    choice = policy.choice
    faces = embed(analyzer=analyzer, image=image, aligned=aligned)
    results: list[Identified] = []
    if faces:
        probes = np.stack([f.embedding for f in faces]).astype(np.float32)
        ranked_all = rank_subjects(gallery, probes, model_id=analyzer.model_id, top_k=top_k)
        for face, ranked in zip(faces, ranked_all, strict=True):
            match = ranked[0] if ranked and ranked[0].distance <= choice.threshold else None
            results.append(Identified(face=face, match=match, candidates=ranked))
    return IdentifyResult(
        faces=results,
        threshold=choice.threshold,
        top_k=top_k,
        model_id=analyzer.model_id,
        gallery_subjects=policy.subjects,
        estimated_fir=policy.estimated_fir,
        threshold_source=choice.source,
        gallery_faces=policy.faces,
    )


# ---- detection and embedding ---------------------------------------------------------------------


def detect(*, analyzer: FaceAnalyzer, image: bytes) -> tuple[tuple[int, int], list[Any]]:
    """``((width, height), detections)`` of the upright image, largest face first."""
    rgb = analyzer.load_image(image)
    return (int(rgb.shape[1]), int(rgb.shape[0])), analyzer.detect(rgb)


def embed(*, analyzer: FaceAnalyzer, image: bytes, aligned: bool = False) -> list[Face]:
    """Every face with its quality and 128-d unit embedding, largest first; ``aligned``: the image is one
    already aligned face crop, embedded without detection (:meth:`FaceAnalyzer.aligned_face`)."""
    return [analyzer.aligned_face(image)] if aligned else analyzer.analyze(image)
