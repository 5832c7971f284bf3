"""Verification: two images, or an image against an enrolled subject, under the fixed (1:1) threshold.

Distances are L2 between unit embeddings in [0, 2]; ``distance <= threshold`` means the same person; similarity
is ``1 - d**2 / 2``. Verification does not normalise scores (that is identify's open-set decision,
:mod:`service.recognition.openset`): its threshold is an L2 distance.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from embeddings import FaceAnalyzer, compare, distance_to_similarity
from embeddings.distance import pairwise_distances
from embeddings.errors import NoFace
from service.gallery import Gallery
from service.gallery.matching import RULE, quality_weight, subject_distances
from service.recognition.analysis import probe_face


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

    @classmethod
    def of(cls, distance: float, threshold: float, model_id: str, **extra: Any) -> VerifyResult:
        """The decision ``distance <= threshold`` with its similarity; ``extra``: the optional fields."""
        return cls(distance <= threshold, distance, distance_to_similarity(distance), threshold, model_id, **extra)


def verify_images(
    *, analyzer: FaceAnalyzer, image_a: bytes, image_b: bytes, threshold: float, aligned: bool = False
) -> VerifyResult:
    """Compare the largest face of each image (:func:`embeddings.compare`); ``aligned``: each image is an
    already aligned face crop."""
    a = probe_face(analyzer, image_a, aligned=aligned)
    b = probe_face(analyzer, image_b, aligned=aligned)
    v = compare(a.embedding, b.embedding, threshold)
    face_a, face_b = a.box.to_dict(), b.box.to_dict()
    return VerifyResult(v.match, v.distance, v.similarity, threshold, analyzer.model_id, face_a, face_b)


def face_ids(gallery: Gallery, subject_id: str, model_id: str) -> list[int]:
    """The subject's face ids of ``model_id``, ascending."""
    return [r.id for r in gallery.list_faces(subject_id) if r.model_id == model_id]


def subject_weights(gallery: Any, subject_id: str, model_id: str, count: int) -> list[float] | None:
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
    before = face_ids(gallery, subject_id, analyzer.model_id)
    enrolled = gallery.face_embeddings(subject_id, model_id=analyzer.model_id)
    after = face_ids(gallery, subject_id, analyzer.model_id)
    if len(enrolled) == 0:
        raise NoFace(f"subject {subject_id!r} has no enrolled faces to compare with")
    face = probe_face(analyzer, image, aligned=aligned)
    dists = pairwise_distances(face.embedding[None, :], enrolled)[0]
    attributed = before == after and len(before) == len(dists)
    weights = subject_weights(gallery, subject_id, analyzer.model_id, len(enrolled))
    d = float(subject_distances(face.embedding[None, :], enrolled, rule=RULE, weights=weights)[0])
    per_face = [{"face_id": i, "distance": float(x)} for i, x in zip(before, dists, strict=True)]
    extra = {"face_a": face.box.to_dict(), "subject_id": subject.id, "subject_name": subject.name}
    return VerifyResult.of(d, threshold, analyzer.model_id, distances=per_face if attributed else None, **extra)
