"""Faces: enrol images into a subject, list a subject's faces, read one face or its crop, erase one face. Admin
scope."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request, Response
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from service import recognition
from service.auth import AdmitFirst
from service.convert import face_out
from service.deps import AdminKey, AuditDep, GalleryDep, ModelDep, audit_change
from service.errors import BadRequest
from service.gallery import FaceNotFound
from service.ids import ROW_ID_MAX
from service.query_check import reads_own_query
from service.routes.docs import AUTH, IfNoneMatch, crop, deletion, errors, image_body, png_crop
from service.schemas import EnrollParams, EnrollResponse, FaceList, FaceOut, Rejected
from service.uploads import read_payload

router = APIRouter(tags=["faces"], route_class=AdmitFirst)

FaceId = Annotated[int, Path(ge=1, le=ROW_ID_MAX, description="A face id (SQLite integer, never reused).")]


@router.post(
    "/v1/subjects/{subject_id}/faces",
    status_code=201,
    response_model=EnrollResponse,
    summary="Enrol one or more images of a subject",
    responses={
        200: {"model": EnrollResponse, "description": "Nothing was stored: every image was rejected."},
        **errors(*AUTH, 404, 413, 415, 422, 429, 503, 507),
    },
    openapi_extra=image_body(
        {
            "images": "One or more photos, each with exactly one acceptable face.",
            "image": "A single photo (same as one `images` entry).",
        },
        EnrollParams,
        {"face": "single"},
    ),
)
@reads_own_query
async def enroll(
    subject_id: str,
    key: AdminKey,
    request: Request,
    model: ModelDep,
    gallery: GalleryDep,
    audit: AuditDep,
) -> JSONResponse:
    """Each image must hold exactly one face that passes the quality minimums (or, with ``face=largest``, its
    largest face is taken). Images that do not are listed in ``rejected`` with a code (``no_face``,
    ``multiple_faces``, ``low_quality``, ``duplicate``, ``invalid_image``, ``payload_too_large``) while the
    good ones are stored. 201 when at least one face was stored, else 200."""
    payload = await read_payload(request)
    params = payload.params(EnrollParams, images=("images", "image"))
    images = payload.files.get("images", []) + payload.files.get("image", [])
    if not images:
        raise BadRequest("send at least one image in `images` (or `image`)")
    result = await model.call(
        "enroll",
        lambda r: len(r.faces),
        recognition.enroll,
        gallery=gallery,
        subject_id=subject_id,
        images=images,
        largest=params.face == "largest",
        store_crop=request.app.state.settings.store_crops,
    )
    if result.faces:
        face_ids = [r.id for r in result.faces]
        await audit_change(audit, "face.enroll", key, {"subject_id": subject_id, "face_ids": face_ids}, len(face_ids))
    body = EnrollResponse(
        faces=[face_out(r) for r in result.faces],
        rejected=[Rejected(index=r.index, code=r.code, message=r.message, face_id=r.face_id) for r in result.rejected],
    )
    return JSONResponse(body.model_dump(mode="json"), status_code=201 if result.faces else 200)


@router.get(
    "/v1/subjects/{subject_id}/faces",
    response_model=FaceList,
    summary="List a subject's faces",
    responses=errors(*AUTH, 404),
)
async def list_faces(subject_id: str, gallery: GalleryDep, _: AdminKey) -> FaceList:
    return FaceList(items=[face_out(r) for r in await run_in_threadpool(gallery.list_faces, subject_id)])


@router.get("/v1/faces/{face_id}", response_model=FaceOut, summary="Read one face", responses=errors(*AUTH, 404))
async def get_face(face_id: FaceId, gallery: GalleryDep, _: AdminKey) -> FaceOut:
    return face_out(await run_in_threadpool(gallery.get_face, face_id))


@router.get("/v1/faces/{face_id}/crop", **crop("The aligned 160x160 crop of an enrolled face (PNG)"))
async def face_crop(face_id: FaceId, gallery: GalleryDep, _: AdminKey, if_none_match: IfNoneMatch = None) -> Response:
    """The crop the face's embedding was computed from (stored with ``FACEREC_STORE_CROPS``, the default): a
    thumbnail of a subject is ``sample_face_id``'s crop. 404 when there is no such face or it has no crop."""
    png = await run_in_threadpool(gallery.crop_png, face_id)
    if png is None:
        raise FaceNotFound(f"face {face_id} does not exist or has no stored crop")
    return png_crop(png, if_none_match)


@router.delete("/v1/faces/{face_id}", **deletion("Erase one face", 404, 503, 507))
async def delete_face(face_id: FaceId, gallery: GalleryDep, key: AdminKey, audit: AuditDep) -> Response:
    await run_in_threadpool(gallery.delete_face, face_id)
    await audit_change(audit, "face.delete", key, {"face_id": face_id})
    return Response(status_code=204)
