"""Nearest subjects from nearest faces, the same for every backend that searches faces: over-fetch faces per
wanted subject, keep each subject's best face, and grow the fetch until ``top_k`` subjects are found or every
face of the model was seen. A probe's model that has no faces while others do is a :class:`ModelMismatch`.

Conventions: distances are L2 between unit vectors, in [0, 2]; similarity is ``1 - d**2 / 2``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from embeddings.distance import distance_to_similarity
from service.gallery.errors import ModelMismatch
from service.gallery.types import Candidate

FaceHit = tuple[int, str, str, float]
"""A face found: ``(face id, subject id, subject name, L2 distance)``."""


def group_subjects(faces: Sequence[FaceHit], top_k: int) -> list[Candidate]:
    """Up to ``top_k`` subjects from faces sorted by distance, each with its best (first) face."""
    seen: set[str] = set()
    out: list[Candidate] = []
    for fid, sid, name, d in faces:
        if sid in seen:
            continue
        seen.add(sid)
        dist = float(min(max(d, 0.0), 2.0))
        out.append(Candidate(sid, name, fid, dist, distance_to_similarity(dist)))
        if len(out) == top_k:
            break
    return out


def check_model_present(model_id: str, faces_by_model: Mapping[str, int]) -> None:
    """:class:`ModelMismatch` when ``model_id`` has no live faces but other models in ``faces_by_model`` do (an
    empty gallery is no mismatch)."""
    if faces_by_model.get(model_id, 0) > 0:
        return
    present = tuple(sorted(m for m, n in faces_by_model.items() if n > 0))
    if present:
        raise ModelMismatch(
            f"no faces of model {model_id!r} in the gallery; it holds faces of {', '.join(present)}",
            requested=model_id,
            present=present,
        )


def nearest_subjects(
    fetch: Callable[[int], list[list[Candidate]]],
    *,
    faces_by_model: Mapping[str, int],
    model_id: str,
    probes: int,
    top_k: int,
    overfetch: int,
) -> list[list[Candidate]]:
    """Per probe (``probes`` of them), up to ``top_k`` subjects. ``fetch(k)`` returns, per probe, the subjects
    (grouped with :func:`group_subjects`) of its ``k`` nearest faces of ``model_id``; ``k`` starts at
    ``max(top_k * overfetch, 16)`` and grows x4 while a probe has fewer than ``top_k`` subjects and faces are
    left. ``faces_by_model``: the gallery's live faces per model (models with none left out)."""
    live = faces_by_model.get(model_id, 0)
    if live == 0:
        check_model_present(model_id, faces_by_model)
        return [[] for _ in range(probes)]
    if probes == 0:
        return []
    k = min(live, max(top_k * overfetch, 16))
    while True:
        rows = fetch(k)
        if k >= live or all(len(r) >= top_k for r in rows):
            return rows
        k = min(live, k * 4)
