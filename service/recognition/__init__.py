"""The service's verbs: enrol, verify, identify, detect, embed. Synchronous, keyword-only, used by the routes
(in a worker thread) and by the CLI (directly on a local data dir).

One module per job: :mod:`.analysis` (faces of an image), :mod:`.enrolment`, :mod:`.verification`,
:mod:`.openset` (identify's threshold policy and FIR estimate) and :mod:`.identification`. Distances are L2
between unit embeddings in [0, 2]; similarity is ``1 - d**2 / 2``.
"""

from __future__ import annotations

from service.recognition.analysis import detect, embed, probe_face
from service.recognition.enrolment import (
    DUPLICATE,
    REJECT_CODES,
    REJECTIONS,
    EnrollResult,
    Rejection,
    enroll,
    face_summary,
    sha256_bytes,
)
from service.recognition.identification import (
    RESCORE_CANDIDATES,
    Identified,
    IdentifyResult,
    SubjectMatch,
    identify,
    rank_subjects,
    rescore,
)
from service.recognition.openset import (
    OpenSetPolicy,
    ThresholdChoice,
    ThresholdScale,
    ThresholdSource,
    identify_threshold,
    open_set_policy,
)
from service.recognition.verification import VerifyResult, verify_images, verify_subject

__all__ = [
    "DUPLICATE",
    "REJECTIONS",
    "REJECT_CODES",
    "RESCORE_CANDIDATES",
    "EnrollResult",
    "Identified",
    "IdentifyResult",
    "OpenSetPolicy",
    "Rejection",
    "SubjectMatch",
    "ThresholdChoice",
    "ThresholdScale",
    "ThresholdSource",
    "VerifyResult",
    "detect",
    "embed",
    "enroll",
    "face_summary",
    "identify",
    "identify_threshold",
    "open_set_policy",
    "probe_face",
    "rank_subjects",
    "rescore",
    "sha256_bytes",
    "verify_images",
    "verify_subject",
]
