"""Identification: every face of an image ranked against the gallery's subjects, named when within the open-set
threshold (:mod:`service.recognition.openset`).

Subjects are scored with the person-level rule (:data:`service.gallery.matching.RULE`: the L2 distance to the
subject's template); when the threshold is on the normalised scale, candidates are ranked and decided by the
normalised score (:mod:`service.gallery.normalisation`), and ``distance`` stays the raw L2 distance.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from embeddings import Face, FaceAnalyzer, distance_to_similarity
from service.gallery import Candidate, Gallery
from service.gallery.matching import RULE, subject_distances, template
from service.gallery.normalisation import Normalisation, normalised_scores
from service.recognition.analysis import embed
from service.recognition.openset import OpenSetPolicy, ThresholdScale, ThresholdSource, open_set_policy
from service.recognition.verification import subject_weights

RESCORE_CANDIDATES = 20
"""Identify rescores at least this many nearest subjects (by nearest face, from the index) with the person-level
rule: the subject with the best template is almost always among them."""


@dataclass(frozen=True)
class SubjectMatch:
    """A candidate subject scored with the person-level rule: ``distance`` (L2 to its template) and its
    ``similarity``; ``score``: what the threshold is compared with (the normalised score when identify's
    threshold is normalised, else ``distance``); ``face_id`` and ``face_distance``: the subject's nearest
    enrolled face and its L2 distance."""

    subject_id: str
    subject_name: str
    face_id: int
    distance: float
    similarity: float
    face_distance: float
    score: float


@dataclass
class Identified:
    face: Face
    match: SubjectMatch | None
    candidates: list[SubjectMatch]


@dataclass
class IdentifyResult:
    """Every face's outcome and the open-set decision they were made under: the threshold (on the scale
    ``threshold_scale`` says), where it came from, its FIR estimate and the gallery counts (``policy``: all of it,
    with the rule that decided)."""

    faces: list[Identified]
    top_k: int
    model_id: str
    threshold: float
    threshold_source: ThresholdSource
    threshold_scale: ThresholdScale
    estimated_fir: float | None
    gallery_subjects: int
    gallery_faces: int
    policy: OpenSetPolicy


def rescore(
    gallery: Any,
    probe: npt.NDArray[np.float32],
    candidates: Sequence[Candidate],
    *,
    model_id: str,
    top_k: int,
    normalisation: Normalisation | None = None,
    by_subject: Mapping[str, npt.NDArray[np.float32]] | None = None,
) -> list[SubjectMatch]:
    """The index's nearest subjects rescored with the person-level rule (their faces from ``by_subject``, or read
    in one :meth:`Gallery.subjects_embeddings` call) and, with ``normalisation``, its normalised score; best
    ``score`` first, at most ``top_k``. A subject erased meanwhile is dropped."""
    found: list[tuple[Candidate, float, npt.NDArray[np.float32]]] = []
    if by_subject is None:
        by_subject = gallery.subjects_embeddings([c.subject_id for c in candidates], model_id=model_id)
    for c in candidates:
        embs = by_subject.get(c.subject_id)
        if embs is None or len(embs) == 0:
            continue
        weights = subject_weights(gallery, c.subject_id, model_id, len(embs))
        d = float(subject_distances(probe[None, :], embs, rule=RULE, weights=weights)[0])
        found.append((c, d, template(embs, weights)))
    if not found:
        return []
    dists = np.array([d for _, d, _ in found])
    scores = dists
    if normalisation is not None:
        tm = np.stack([t for _, _, t in found])
        probe_spread = normalisation.probe_spreads(probe[None, :])
        scores = normalised_scores(dists[None, :], probe_spread, normalisation.subject_spreads(tm))[0]
    out = [
        SubjectMatch(c.subject_id, c.subject_name, c.face_id, d, distance_to_similarity(d), c.distance, float(s))
        for (c, d, _), s in zip(found, scores, strict=True)
    ]
    out.sort(key=lambda m: m.score)
    return out[:top_k]


def rank_subjects(
    gallery: Gallery,
    probes: npt.NDArray[np.float32],
    *,
    model_id: str,
    top_k: int,
    normalisation: Normalisation | None = None,
) -> list[list[SubjectMatch]]:
    """For each probe row: the nearest subjects under the person-level rule, best first, at most ``top_k``. The
    index ranks subjects by their nearest face; the rule ranks the ``max(top_k, RESCORE_CANDIDATES)`` nearest of
    those again (:func:`rescore`, normalised with ``normalisation`` when given). The candidates' faces of all
    probes are read in one :meth:`Gallery.subjects_embeddings` call."""
    hits = gallery.search(probes, model_id=model_id, top_k=max(top_k, RESCORE_CANDIDATES))
    wanted = sorted({c.subject_id for cands in hits for c in cands})
    by_subject = gallery.subjects_embeddings(wanted, model_id=model_id) if wanted else {}
    return [
        rescore(
            gallery, probe, cands, model_id=model_id, top_k=top_k, normalisation=normalisation, by_subject=by_subject
        )
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

    ``threshold`` given (L2): used as is. None: :func:`~service.recognition.openset.open_set_policy` picks it
    from ``fixed_threshold`` (default: the analyzer's), ``max_fir`` and the model's own calibration tables and
    normalisation at the gallery size (subjects with faces of the analyzer's model, bounded by the subject and
    face counts).
    """
    fixed = float(analyzer.threshold) if fixed_threshold is None else fixed_threshold
    policy = open_set_policy(gallery, model_id=analyzer.model_id, fixed=fixed, max_fir=max_fir, requested=threshold)
    faces = embed(analyzer=analyzer, image=image, aligned=aligned)
    results: list[Identified] = []
    if faces:
        probes = np.stack([f.embedding for f in faces]).astype(np.float32)
        ranked_all = rank_subjects(
            gallery, probes, model_id=analyzer.model_id, top_k=top_k, normalisation=policy.normalisation
        )
        for face, ranked in zip(faces, ranked_all, strict=True):
            match = ranked[0] if ranked and policy.accepts(ranked[0]) else None
            results.append(Identified(face=face, match=match, candidates=ranked))
    c = policy.choice
    counts = (policy.estimated_fir, policy.subjects, policy.faces)
    return IdentifyResult(results, top_k, analyzer.model_id, c.threshold, c.source, c.scale, *counts, policy)
