"""Subjects: create, list (paginated), read, update, erase. Admin scope."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import AbstractContextManager
from typing import Annotated

from fastapi import APIRouter, Body, Query, Request, Response
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from service.auth import AdmitFirst
from service.convert import subject_out
from service.deps import AdminKey, AuditDep, GalleryDep, audit_change
from service.erasure import erase_subject, rename_subject
from service.head import for_head
from service.media import MediaDep
from service.photos.library import PhotoLibrary
from service.photos.service import holding_photo_faces
from service.routes.docs import AUTH, deletion, errors
from service.schemas import SubjectCreate, SubjectOut, SubjectPage, SubjectUpdate
from service.subject_export import write_export

router = APIRouter(prefix="/v1/subjects", tags=["subjects"], route_class=AdmitFirst)


@router.post(
    "",
    status_code=201,
    response_model=SubjectOut,
    summary="Create a subject",
    responses=errors(*AUTH, 415, 422, 503, 507),
)
async def create_subject(
    body: Annotated[
        SubjectCreate,
        Body(openapi_examples={"basic": {"value": {"name": "Ada Lovelace", "metadata": {"team": "math"}}}}),
    ],
    gallery: GalleryDep,
    key: AdminKey,
    audit: AuditDep,
) -> SubjectOut:
    """A person to enrol faces into. ``metadata`` is any JSON object kept with the subject."""
    subject = await run_in_threadpool(lambda: gallery.create_subject(name=body.name, metadata=body.metadata))
    await audit_change(audit, "subject.create", key, {"subject_id": subject.id})
    return subject_out(subject)


@router.get("", response_model=SubjectPage, summary="List subjects, paginated", responses=errors(*AUTH, 422))
async def list_subjects(
    gallery: GalleryDep,
    _: AdminKey,
    limit: Annotated[int, Query(ge=1, le=500, description="Page size.")] = 50,
    cursor: Annotated[str | None, Query(description="`next_cursor` of the previous page.")] = None,
) -> SubjectPage:
    items, nxt = await run_in_threadpool(lambda: gallery.list_subjects(limit=limit, cursor=cursor))
    return SubjectPage(items=[subject_out(s) for s in items], next_cursor=nxt)


@router.get("/{subject_id}", response_model=SubjectOut, summary="Read a subject", responses=errors(*AUTH, 404))
async def get_subject(subject_id: str, gallery: GalleryDep, _: AdminKey) -> SubjectOut:
    return subject_out(await run_in_threadpool(gallery.get_subject, subject_id))


@router.patch(
    "/{subject_id}",
    response_model=SubjectOut,
    summary="Rename a subject or replace its metadata",
    responses=errors(*AUTH, 404, 415, 422, 503, 507),
)
async def update_subject(
    subject_id: str,
    body: Annotated[SubjectUpdate, Body(openapi_examples={"rename": {"value": {"name": "Ada King"}}})],
    gallery: GalleryDep,
    key: AdminKey,
    audit: AuditDep,
    media: MediaDep,
) -> SubjectOut:
    """A new name is shown by the subject's events and video tracks too."""
    subject = await run_in_threadpool(
        lambda: rename_subject(
            subject_id,
            name=body.name,
            metadata=body.metadata,
            gallery=gallery,
            events=media.events,
            jobs=media.jobs,
        )
    )
    fields = sorted(name for name in ("name", "metadata") if getattr(body, name) is not None)
    if fields:  # a PATCH that names no field changes nothing: no record
        await audit_change(audit, "subject.update", key, {"subject_id": subject_id, "fields": fields})
    return subject_out(subject)


@router.delete("/{subject_id}", **deletion("Erase a subject and all its faces", 404, 503, 507))
async def delete_subject(
    subject_id: str,
    gallery: GalleryDep,
    key: AdminKey,
    audit: AuditDep,
    media: MediaDep,
    request: Request,
    erase_photo_faces: Annotated[
        bool,
        Query(
            description="Photo library: also erase the faces of this person in indexed photos (default: they "
            "are kept as unnamed faces, in one cluster)."
        ),
    ] = False,
) -> Response:
    """Erases the subject, its faces, its events (``GET /v1/events``) and its tracks in video jobs' results; its
    photo-library faces too with ``erase_photo_faces``."""

    def erase() -> None:
        with photo_faces(request) as library:
            erase_subject(
                subject_id,
                gallery=gallery,
                events=media.events,
                jobs=media.jobs,
                library=library,
                erase_photo_faces=erase_photo_faces,
            )

    await run_in_threadpool(erase)
    await audit_change(audit, "subject.delete", key, {"subject_id": subject_id})
    return Response(status_code=204)


def photo_faces(request: Request) -> AbstractContextManager[PhotoLibrary | None]:
    """The library holding the photo faces of subjects, even while the photo library is off
    (:func:`service.photos.service.holding_photo_faces`); open and use it in a worker thread."""
    state = request.app.state
    return holding_photo_faces(state.settings, state.photos, state.photo_store)


EXPORT_SPOOL_BYTES = 8 * 1024 * 1024
"""An export up to this size is built in memory; a larger one spills to a temporary file (deleted once sent)."""


@router.get(
    "/{subject_id}/export",
    response_class=StreamingResponse,
    summary="Everything held about a subject, as one ZIP (a data access request)",
    responses={200: {"content": {"application/zip": {}}}, **errors(*AUTH, 404, 503, 507)},
)
async def export_subject(
    subject_id: str, gallery: GalleryDep, key: AdminKey, audit: AuditDep, media: MediaDep, request: Request
) -> Response:
    """The subject, its faces and their crops, its events, its tracks in video jobs and its photo-library faces
    (``service.subject_export`` gives the layout). Each export is audited (``subject.export``) before it is sent:
    one that cannot be recorded is not sent (503/507). A HEAD answers the GET's status and headers without
    making (or auditing) an export."""
    headers = {
        "Content-Disposition": f'attachment; filename="subject-{subject_id}.zip"',
        "Cache-Control": "no-store",
    }
    if for_head(request.scope):
        await run_in_threadpool(gallery.get_subject, subject_id)  # 404 as the GET would
        # streamed like the GET, so without a Content-Length: a plain Response would say 0, a size the GET's is not
        return StreamingResponse(iter(()), media_type="application/zip", headers=headers)
    spool = tempfile.SpooledTemporaryFile(max_size=EXPORT_SPOOL_BYTES)  # noqa: SIM115 (closed once sent or failed)

    def export() -> dict[str, int]:
        with photo_faces(request) as library:
            return write_export(
                spool, subject_id, gallery=gallery, events=media.events, jobs=media.jobs, library=library
            )

    try:
        counts = await run_in_threadpool(export)
        await audit_change(audit, "subject.export", key, {"subject_id": subject_id, **counts})
    except BaseException:
        spool.close()
        raise
    spool.seek(0)

    def chunks() -> Iterator[bytes]:
        with spool:
            while block := spool.read(64 * 1024):
                yield block

    return StreamingResponse(chunks(), media_type="application/zip", headers=headers)
