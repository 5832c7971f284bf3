"""Erasing a person everywhere: the one sequence the REST call and the CLI run (``DELETE /v1/subjects/{id}``,
``facerec subjects delete``); renaming one everywhere (``PATCH /v1/subjects/{id}``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from service.events.store import EventStore
    from service.gallery import Gallery, Subject
    from service.photos.library import PhotoLibrary
    from service.video.jobstore import JobStore


def erase_subject(
    subject_id: str,
    *,
    gallery: Gallery,
    events: EventStore,
    jobs: JobStore,
    library: PhotoLibrary | None,
    erase_photo_faces: bool,
) -> None:
    """Erase the subject's events, its tracks in video jobs' results, its photo-library faces' names (the faces
    too with ``erase_photo_faces``; ``library``: None when the photo library is off), then the subject and its
    faces (:class:`~service.gallery.SubjectNotFound` first, touching nothing, if there is none), then the first
    three again.

    The subject goes after the rest: a store that fails on the way (503/507) leaves it in the gallery, so the same
    call again finishes the erasure (and is audited then); erased first, it made the retry a 404 that left the
    rest. The second pass erases what a camera, a video job or a naming recorded of the subject while it was
    still there (between the first pass and its deletion); nothing can name it after that."""
    gallery.get_subject(subject_id)
    _erase_mentions(subject_id, events=events, jobs=jobs, library=library, erase_photo_faces=erase_photo_faces)
    gallery.delete_subject(subject_id)
    _erase_mentions(subject_id, events=events, jobs=jobs, library=library, erase_photo_faces=erase_photo_faces)


def _erase_mentions(
    subject_id: str, *, events: EventStore, jobs: JobStore, library: PhotoLibrary | None, erase_photo_faces: bool
) -> None:
    """The subject's events and video tracks erased, its photo-library faces unnamed (or erased)."""
    events.erase_subject(subject_id)
    jobs.erase_subject(subject_id)
    if library is not None and erase_photo_faces:
        library.erase_subject_faces(subject_id)
    elif library is not None:
        library.forget_subject(subject_id)


def rename_subject(
    subject_id: str,
    *,
    name: str | None,
    metadata: dict[str, Any] | None,
    gallery: Gallery,
    events: EventStore,
    jobs: JobStore,
) -> Subject:
    """Rename the subject and/or replace its metadata (None: unchanged); a new name is then shown by its events and
    its tracks in video jobs' results too (they are stored with the name they were decided under). A store that
    fails on the way (503/507) leaves the rest: the same call again finishes it."""
    subject = gallery.update_subject(subject_id, name=name, metadata=metadata)
    if name is not None:
        events.rename_subject(subject_id, subject.name)
        jobs.rename_subject(subject_id, subject.name)
    return subject
