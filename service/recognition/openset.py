"""Identify's open-set decision: the threshold at the gallery's size, its scale, and the FIR estimate it carries.

Two scales: an L2 ``distance`` (a requested threshold, the fixed one, or the model's L2 tables), or a
``normalised`` score (:mod:`service.gallery.normalisation`) when the model has a cohort normalisation and the
threshold is chosen for ``FACEREC_MAX_FIR``. A normalised decision also keeps the raw distance within the fixed
(1:1) threshold, so it is never looser than verification.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

from service.gallery import Gallery
from service.gallery.calibration import Calibration, comparisons, load_calibration, open_set_estimate
from service.gallery.normalisation import Normalisation, load_normalisation

ThresholdSource = Literal["request", "fixed", "max_fir", "uncalibrated"]
"""Where identify's threshold came from (see :class:`ThresholdChoice`)."""

ThresholdScale = Literal["distance", "normalised"]
"""What identify's threshold is compared with: the L2 ``distance`` or the ``normalised`` score."""


class Scored(Protocol):
    """A subject's scores for a probe (:class:`service.recognition.identification.SubjectMatch`)."""

    @property
    def distance(self) -> float: ...

    @property
    def score(self) -> float: ...


@dataclass(frozen=True)
class ThresholdChoice:
    """The identify threshold, where it came from and its scale: ``"request"`` (given explicitly, L2),
    ``"fixed"`` (``FACEREC_THRESHOLD`` or the model card, L2), ``"max_fir"`` (chosen to keep the estimated
    false-identification rate at the gallery's size within ``FACEREC_MAX_FIR``: on the normalised score when
    the model has a normalisation, else an L2 distance tightened below the fixed one) or ``"uncalibrated"`` (the
    fixed threshold: the model has no calibration tables, so no FIR estimate exists for it)."""

    threshold: float
    source: ThresholdSource
    scale: ThresholdScale = "distance"


def identify_threshold(
    *,
    requested: float | None,
    fixed: float,
    max_fir: float | None,
    calibration: Calibration | None,
    subjects: int,
    faces: int,
    normalisation: Normalisation | None = None,
) -> ThresholdChoice:
    """The open-set threshold policy of identify.

    An explicit ``requested`` threshold (L2) is used as given. ``max_fir`` None or 0 or an empty gallery leave
    the fixed threshold. Otherwise, with a ``normalisation``: its table's threshold for ``max_fir`` at ``subjects``
    subjects, on the normalised scale; without one: ``min(fixed, calibration.threshold_for_fir(max_fir, N))``
    with ``N`` what the rule compares against (:func:`service.gallery.calibration.comparisons`); without either:
    the fixed threshold, reported ``uncalibrated``.
    """
    if requested is not None:
        return ThresholdChoice(float(requested), "request")
    if not max_fir or subjects <= 0:
        return ThresholdChoice(fixed, "fixed")
    if normalisation is not None:
        return ThresholdChoice(normalisation.table.threshold_for_fir(max_fir, subjects), "max_fir", "normalised")
    if calibration is None:
        return ThresholdChoice(fixed, "uncalibrated")
    adaptive = calibration.threshold_for_fir(max_fir, comparisons(calibration.rule, subjects, faces))
    return ThresholdChoice(adaptive, "max_fir") if adaptive < fixed else ThresholdChoice(fixed, "fixed")


@dataclass(frozen=True, slots=True)
class OpenSetPolicy:
    """Identify's open-set decision rule at the gallery's current size: the threshold (and where it came from),
    the FIR estimate it carries, the counts it was computed for (subjects with faces of the model, faces), the
    fixed threshold and, for a normalised threshold, the normalisation that scores candidates."""

    choice: ThresholdChoice
    estimated_fir: float | None
    subjects: int
    faces: int
    fixed: float
    normalisation: Normalisation | None = None

    def accepts(self, match: Scored) -> bool:
        """Whether ``match`` (a candidate scored by :func:`~service.recognition.identification.rank_subjects`
        with this policy's normalisation) is within the threshold."""
        if self.choice.scale == "normalised":
            return match.score <= self.choice.threshold and match.distance <= self.fixed
        return match.distance <= self.choice.threshold


def open_set_policy(
    gallery: Gallery, *, model_id: str, fixed: float, max_fir: float | None, requested: float | None = None
) -> OpenSetPolicy:
    """The threshold identify uses for ``model_id`` now (:func:`identify_threshold` with the model's own tables
    and normalisation) and its FIR estimate; shared by ``POST /v1/identify`` and the video/stream decisions."""
    subjects = int(gallery.subject_count())
    size = int(gallery.face_count(model_id))
    people = min(subjects, size)
    calibration = load_calibration(model_id)
    norm = load_normalisation(model_id) if requested is None else None
    choice = identify_threshold(
        requested=requested, fixed=fixed, max_fir=max_fir, calibration=calibration, subjects=people, faces=size,
        normalisation=norm,
    )  # fmt: skip
    if choice.scale == "normalised" and norm is not None:
        fir = norm.table.false_identification_rate(choice.threshold, people)
        return OpenSetPolicy(choice, fir, subjects, size, fixed, norm)
    return OpenSetPolicy(choice, open_set_estimate(calibration, choice.threshold, people, size), subjects, size, fixed)
