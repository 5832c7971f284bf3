"""Rows of the gallery tables as the gallery's records: the column lists the queries select and the converters
from a row to a :class:`Subject` / :class:`FaceRecord` (times are Unix seconds)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from service.gallery.types import FaceRecord, Subject

SUBJECT_COLS = (
    "s.pk, s.id, s.name, s.metadata, s.created_at, s.updated_at, "
    "(SELECT count(*) FROM faces f WHERE f.subject_pk = s.pk), "
    "(SELECT min(f.id) FROM faces f WHERE f.subject_pk = s.pk)"
)
"""A subject row (alias ``s``): its internal ``pk`` first, then what :func:`subject` reads, with its face count and
its sample face (the lowest face id: the ``faces_subject`` index's first entry for the subject)."""
FACE_COLS = "f.id, s.id, f.model_id, f.box, f.quality, f.image_sha256, f.created_at"
FACE_FROM = "FROM faces f JOIN subjects s ON s.pk = f.subject_pk"


def subject(row: Sequence[Any]) -> Subject:
    """A :data:`SUBJECT_COLS` row as a :class:`Subject`."""
    return Subject(
        id=row[1],
        name=row[2],
        metadata=row[3],
        created_at=row[4],
        updated_at=row[5],
        face_count=row[6],
        sample_face_id=None if row[7] is None else int(row[7]),
    )


def face(row: Sequence[Any]) -> FaceRecord:
    """A :data:`FACE_COLS` row as a :class:`FaceRecord`."""
    return FaceRecord(
        id=int(row[0]),
        subject_id=row[1],
        model_id=row[2],
        box=row[3],
        quality=row[4],
        image_sha256=row[5],
        created_at=row[6],
    )


def to_json(value: dict[str, Any] | None) -> str | None:
    """``value`` as JSON text for a ``jsonb`` parameter (None stays NULL)."""
    return json.dumps(value) if value is not None else None
