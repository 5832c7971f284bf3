"""A subject's data export (a person's request to see the data held about them): everything facerec keeps of one
subject, in one ZIP; the REST call and the CLI run this (``GET /v1/subjects/{id}/export``, ``facerec subjects
export``). It reads the same places :mod:`service.erasure` erases.

Layout (``format`` 1), JSON in the API's shapes, times ISO 8601 UTC or Unix seconds as the API gives them:

- ``manifest.json``: format, subject id, ``exported_at``, the count of each part, the model the faces were
  embedded with and what the export leaves out;
- ``subject.json``: the subject (``GET /v1/subjects/{id}``);
- ``faces.json`` and ``faces/<face id>.png``: its enrolled faces (``GET /v1/subjects/{id}/faces``) and their
  aligned 160x160 crops (faces enrolled without a stored crop have none);
- ``events.json``: its events from videos and streams (``GET /v1/events?subject_id=``);
- ``videos.json``: the video jobs whose results name it, with its tracks only;
- ``photos.json`` and ``photo_faces/<face id>.png``: the photo-library photos it is named in, with its faces
  only (other people's faces in the same photos are not its data), and their crops.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import asdict
from datetime import UTC, datetime
from typing import IO, TYPE_CHECKING, Any

from service.convert import face_out, subject_out
from service.events.store import EventFilter

if TYPE_CHECKING:
    from service.events.store import EventStore
    from service.gallery import Gallery
    from service.photos.library import PhotoLibrary
    from service.video.jobstore import JobStore

FORMAT = 1
"""The layout's version, in ``manifest.json``."""

PAGE = 500
"""Rows read per query while exporting events and photos."""

LEFT_OUT = [
    "embeddings: computed from the face crops in this export by the model named in `model_id`",
    "the audit log: its records name the subject's id and who changed what, not the subject's data",
    "webhook deliveries already sent, and copies or backups of the data",
]
"""What the manifest says the export does not hold."""


def write_export(
    out: IO[bytes],
    subject_id: str,
    *,
    gallery: Gallery,
    events: EventStore,
    jobs: JobStore,
    library: PhotoLibrary | None,
) -> dict[str, int]:
    """Write the ZIP of ``subject_id`` to ``out`` (:class:`~service.gallery.SubjectNotFound` first, writing
    nothing, if there is none); returns the count of each part. ``library``: None when the photo library is off."""
    subject = gallery.get_subject(subject_id)
    counts: dict[str, int] = {}
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("subject.json", _json(subject_out(subject).model_dump(mode="json")))
        faces = gallery.list_faces(subject_id)
        z.writestr("faces.json", _json([face_out(f).model_dump(mode="json") for f in faces]))
        counts["faces"] = len(faces)
        counts["face_crops"] = _crops(z, "faces", [f.id for f in faces], gallery.crop_png)
        counts["events"] = _events(z, events, subject_id)
        tracked = jobs.subject_tracks(subject_id)
        videos = [{"video": _video(job), "tracks": tracks} for job, tracks in tracked]
        z.writestr("videos.json", _json(videos))
        counts["videos"] = len(videos)
        counts["photos"], counts["photo_faces"], counts["photo_face_crops"] = _photos(z, library, subject_id)
        manifest = {
            "format": FORMAT,
            "subject_id": subject_id,
            "exported_at": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
            "model_id": sorted({f.model_id for f in faces}),
            "photo_library": library is not None,
            "counts": counts,
            "not_included": LEFT_OUT,
        }
        z.writestr("manifest.json", _json(manifest))
    return counts


def _json(value: Any) -> str:
    return json.dumps(value, indent=1, ensure_ascii=False)


def _crops(z: zipfile.ZipFile, folder: str, ids: list[int], crop: Any) -> int:
    """Each face's crop as ``<folder>/<id>.png`` (stored as is: PNG is compressed); how many there were."""
    n = 0
    for face_id in ids:
        png = crop(face_id)
        if png is not None:
            z.writestr(zipfile.ZipInfo(f"{folder}/{face_id}.png", date_time=(1980, 1, 1, 0, 0, 0)), png)
            n += 1
    return n


def _events(z: zipfile.ZipFile, events: EventStore, subject_id: str) -> int:
    found: list[dict[str, Any]] = []
    cursor: int | None = None
    while True:
        page, cursor = events.query(EventFilter(subject_id=subject_id, limit=PAGE, cursor=cursor))
        found += [e.to_dict() for e in page]
        if cursor is None:
            break
    z.writestr("events.json", _json(found))
    return len(found)


def _video(job: Any) -> dict[str, Any]:
    """A job as the export shows it: not its server-side path, nor the other people's tracks."""
    return {k: v for k, v in asdict(job).items() if k not in ("path", "tracks")}


def _photos(z: zipfile.ZipFile, library: PhotoLibrary | None, subject_id: str) -> tuple[int, int, int]:
    """``photos.json`` and the crops of the subject's photo faces: (photos, faces, crops)."""
    from service.photos.schemas import PhotoOut

    photos: list[dict[str, Any]] = []
    face_ids: list[int] = []
    after: tuple[float, str] | None = None
    while library is not None:
        rows = library.store.photos_of_subject(subject_id, limit=PAGE, after=after)
        for photo, faces in rows:
            photos.append(PhotoOut.of(photo, faces).model_dump(mode="json", exclude={"created"}))
            face_ids += [f.id for f in faces]
        if len(rows) < PAGE:
            break
        after = (rows[-1][0].created_at, rows[-1][0].id)
    z.writestr("photos.json", _json(photos))
    crops = _crops(z, "photo_faces", face_ids, library.store.crop_png) if library is not None else 0
    return len(photos), len(face_ids), crops
