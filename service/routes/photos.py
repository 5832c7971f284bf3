"""Photo library endpoints (admin scope; opt-in with ``FACEREC_PHOTO_LIBRARY=true``, else 403
``photo_library_disabled``): index photos, FindSimilar search, a subject's photos, clusters of unnamed faces."""

from __future__ import annotations

import functools
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Path, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from service import recognition
from service.audit import actor_of
from service.auth import AdmitFirst
from service.deps import AdminKey, AnalyzerDep, AuditDep, GalleryDep, RunnerDep, SettingsDep, get_analyzer, get_runner
from service.errors import BadRequest
from service.gallery.cursor import ROW_KEY
from service.ids import ROW_ID_MAX
from service.photos import clusters as ops
from service.photos.errors import ObservationNotFound, PhotoLibraryDisabled
from service.photos.library import IndexOptions, PhotoLibrary
from service.photos.naming import repair_once
from service.photos.schemas import (
    ClusterDetail,
    ClusterOut,
    ClusterPage,
    Erased,
    MergeClusters,
    NameCluster,
    NamedClusterOut,
    PhotoFaceOut,
    PhotoOut,
    PhotoParams,
    ReclusterOut,
    RemovedFace,
    SearchParams,
    SearchResponse,
    SimilarFaceOut,
    SubjectPhotoPage,
)
from service.query_check import reads_own_query
from service.routes.cursors import NOT_ISSUED, parse_time_id_cursor, time_id_cursor
from service.routes.docs import AUTH, IfNoneMatch, crop, deletion, errors, image_body, png_crop
from service.uploads import read_payload

router = APIRouter(prefix="/v1", tags=["photos"], responses=errors(401, 403, 422), route_class=AdmitFirst)
"""Every endpoint: 401/403 for keys, 403 ``photo_library_disabled`` when the library is off, 422 for bad input."""

IMAGE_ERRORS = errors(*AUTH, 413, 415, 422, 429, 503)
SAMPLE_FACES = 4


def _doc(summary: str, *codes: int, **extra: Any) -> dict[str, Any]:
    """Route keyword arguments: the ``summary`` and the error ``codes`` documented besides 401/403."""
    return {"summary": summary, "responses": errors(*AUTH, *codes), **extra}


async def get_library(request: Request) -> PhotoLibrary:
    """The open photo library; 403 ``photo_library_disabled`` when the deployment has not opted in. The first
    call after a start completes the cluster namings a crash interrupted (:mod:`service.photos.naming`)."""
    lib: PhotoLibrary | None = getattr(request.app.state, "photos", None)
    if lib is None:
        raise PhotoLibraryDisabled()
    gallery = getattr(request.app.state, "gallery", None)
    if not lib.namings_repaired and gallery is not None:
        await run_in_threadpool(lambda: repair_once(lib, gallery=gallery))
    return lib


LibraryDep = Annotated[PhotoLibrary, Depends(get_library)]
ClusterId = Annotated[int, Path(ge=1, le=ROW_ID_MAX)]
FaceId = Annotated[int, Path(ge=1, le=ROW_ID_MAX)]


def _cluster_cursor(cursor: str | None) -> tuple[int, int] | None:
    """The ``(size, id)`` of the last cluster of the previous page, from its cursor ``<size>_<id>``."""
    if cursor is None:
        return None
    size, sep, cluster_id = cursor.partition("_")
    if not sep or not ROW_KEY.fullmatch(size) or not ROW_KEY.fullmatch(cluster_id):
        raise BadRequest(NOT_ISSUED)
    return int(size), int(cluster_id)


INDEX_DOC: dict[str, Any] = {
    "summary": "Index a library photo: store every face in it (named when identify matches)",
    "responses": {200: {"model": PhotoOut, "description": "Already indexed (same sha256)."}, **IMAGE_ERRORS},
    "openapi_extra": image_body({"image": "The photo."}, PhotoParams, {"external_id": "a.jpg"}),
}


@router.post("/photos", status_code=201, response_model=PhotoOut, **INDEX_DOC)
@reads_own_query
async def index_photo(
    key: AdminKey,
    request: Request,
    response: Response,
    lib: LibraryDep,
    analyzer: AnalyzerDep,
    gallery: GalleryDep,
    runner: RunnerDep,
    settings: SettingsDep,
    audit: AuditDep,
) -> PhotoOut:
    """Each face is stored with its embedding, box, quality and (by ``FACEREC_STORE_CROPS``) its aligned crop;
    the photo itself is not stored, only its sha256. A face within identify's threshold of an enrolled subject
    is named; the others join clusters of unnamed faces. 201 when indexed now, 200 when this photo (same
    sha256) was indexed before: nothing changes."""
    payload = await read_payload(request)
    params = payload.params(PhotoParams, images=("image",))
    image = payload.one("image")
    if image is None:
        raise BadRequest("the `image` file is required")
    index = functools.partial(lib.index_photo, analyzer=analyzer, gallery=gallery, options=IndexOptions.of(settings))
    result, _ = await runner.run(index, image=image, external_id=params.external_id)
    if result.created:
        target = {"photo_id": result.photo.id, "faces": len(result.faces)}
        await run_in_threadpool(lambda: audit.record("photo.index", actor=actor_of(key), target=target))
    else:
        response.status_code = 200
    return PhotoOut.of(result.photo, result.faces, result.created)


@router.get(
    "/photos/{photo_id}", response_model=PhotoOut, summary="An indexed photo and its faces", responses=errors(404)
)
async def get_photo(photo_id: str, _: AdminKey, lib: LibraryDep) -> PhotoOut:
    photo = await run_in_threadpool(lib.store.get_photo, photo_id)
    return PhotoOut.of(photo, await run_in_threadpool(lib.store.photo_faces, photo_id))


@router.delete("/photos/{photo_id}", **deletion("Erase an indexed photo's faces (and their templates)", 404, 503, 507))
async def delete_photo(photo_id: str, key: AdminKey, lib: LibraryDep, gallery: GalleryDep, audit: AuditDep) -> Response:
    faces = await run_in_threadpool(lambda: lib.delete_photo(photo_id, gallery=gallery))
    target = {"photo_id": photo_id, "faces": len(faces)}
    await run_in_threadpool(lambda: audit.record("photo.delete", actor=actor_of(key), target=target))
    return Response(status_code=204)


@router.get("/photos/faces/{face_id}/crop", **crop("The aligned 160x160 crop of a photo face (PNG)"))
async def photo_face_crop(face_id: FaceId, _: AdminKey, lib: LibraryDep, if_none_match: IfNoneMatch = None) -> Response:
    png = await run_in_threadpool(lib.store.crop_png, face_id)
    if png is None:
        raise ObservationNotFound(f"photo face {face_id} does not exist or has no stored crop")
    return png_crop(png, if_none_match)


SEARCH_BODY = image_body({"image": "A photo; its largest face is searched with."}, SearchParams, {"top_k": 10})


@router.post(
    "/search",
    response_model=SearchResponse,
    summary="FindSimilar: the indexed photo faces most similar to a face (an image or a face id)",
    responses={**IMAGE_ERRORS, **errors(404)},
    openapi_extra=SEARCH_BODY,
)
@reads_own_query
async def search(_: AdminKey, request: Request, lib: LibraryDep) -> SearchResponse:
    """Nearest first; ``threshold`` (L2) keeps only faces at most that far. Send ``image`` or ``face_id`` (a
    search by face id needs no model, so it also works while the model loads)."""
    payload = await read_payload(request)
    params = payload.params(SearchParams, images=("image",))
    image = payload.one("image")
    if (image is None) == (params.face_id is None):
        raise BadRequest("send exactly one of an `image` or a `face_id`")
    if params.face_id is not None:
        face, probe = await run_in_threadpool(lib.face_embedding, params.face_id)
        model_id = face.model_id
    else:
        assert image is not None
        analyzer = await get_analyzer(request)
        runner = await get_runner(request, analyzer)  # built with the model: only an image search needs it
        found, _seconds = await runner.run(recognition.probe_face, analyzer, image)
        probe, model_id = found.embedding, analyzer.model_id
    hits = await run_in_threadpool(
        lambda: lib.search(probe, model_id=model_id, top_k=params.top_k, threshold=params.threshold)
    )
    return SearchResponse(
        model_id=model_id,
        probe_face_id=params.face_id,
        results=[
            SimilarFaceOut(face=PhotoFaceOut.of(h.face), distance=h.distance, similarity=h.similarity) for h in hits
        ],
    )


@router.get("/subjects/{subject_id}/photos", response_model=SubjectPhotoPage, **_doc("The photos a subject is in", 404))
async def subject_photos(
    subject_id: str,
    _: AdminKey,
    lib: LibraryDep,
    gallery: GalleryDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(description="`next_cursor` of the previous page.")] = None,
) -> SubjectPhotoPage:
    """Newest first; ``next_cursor`` is the last photo listed, so photos erased or indexed while paging neither
    make the next page skip a photo nor repeat one."""
    after = parse_time_id_cursor(cursor)
    await run_in_threadpool(gallery.get_subject, subject_id)  # 404 for an unknown subject
    rows = await run_in_threadpool(lambda: lib.store.photos_of_subject(subject_id, limit=limit + 1, after=after))
    last = rows[limit - 1][0] if len(rows) > limit else None
    nxt = None if last is None else time_id_cursor(last.created_at, last.id)
    return SubjectPhotoPage(items=[PhotoOut.of(p, faces) for p, faces in rows[:limit]], next_cursor=nxt)


@router.delete(
    "/subjects/{subject_id}/photos",
    response_model=Erased,
    **_doc("Erase every photo face named as this subject (and templates enrolled from them)", 404, 503, 507),
)
async def erase_subject_photos(
    subject_id: str, key: AdminKey, lib: LibraryDep, gallery: GalleryDep, audit: AuditDep
) -> Erased:
    """404 for an unknown subject, unless faces were still named as it (a deletion interrupted before it
    un-named them): those are erased."""
    faces = await run_in_threadpool(lambda: lib.erase_subject_faces(subject_id, gallery=gallery))
    if not faces:
        await run_in_threadpool(gallery.get_subject, subject_id)  # 404 for an unknown subject, nothing recorded
    target = {"subject_id": subject_id, "faces": len(faces)}
    await run_in_threadpool(lambda: audit.record("photo.erase_subject", actor=actor_of(key), target=target))
    return Erased(erased=len(faces))


@router.get("/clusters", response_model=ClusterPage, summary="Clusters of unnamed faces, largest first")
async def list_clusters(
    _: AdminKey,
    lib: LibraryDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query()] = None,
    min_size: Annotated[
        int, Query(ge=1, le=ROW_ID_MAX, description="Only clusters with at least this many faces.")
    ] = 1,
) -> ClusterPage:
    """``total`` counts the clusters of at least ``min_size`` faces; ``next_cursor`` is the last cluster listed
    (its size and id), so clusters named, merged or emptied while paging make the next page skip none."""
    after = _cluster_cursor(cursor)
    items, total = await run_in_threadpool(
        lambda: lib.store.list_clusters(limit=limit + 1, sample=SAMPLE_FACES, after=after, min_size=min_size)
    )
    nxt = f"{items[limit - 1].size}_{items[limit - 1].id}" if len(items) > limit else None
    return ClusterPage(
        items=[ClusterOut(id=c.id, size=c.size, sample_face_ids=c.sample_face_ids) for c in items[:limit]],
        total=total,
        next_cursor=nxt,
    )


@router.get("/clusters/{cluster_id}", response_model=ClusterDetail, responses=errors(*AUTH, 404))
async def get_cluster(cluster_id: ClusterId, _: AdminKey, lib: LibraryDep) -> ClusterDetail:
    faces = await run_in_threadpool(lib.store.cluster_faces, cluster_id)
    return ClusterDetail(id=cluster_id, size=len(faces), faces=[PhotoFaceOut.of(f) for f in faces])


NameBody = Annotated[NameCluster, Body(openapi_examples={"new": {"value": {"name": "Ada Lovelace"}}})]
NAME_DOC = _doc("Name a cluster: its faces join a new or existing subject", 404, 415, 503, 507)


@router.post("/clusters/{cluster_id}/name", response_model=NamedClusterOut, **NAME_DOC)
async def name_cluster(
    cluster_id: ClusterId, body: NameBody, key: AdminKey, lib: LibraryDep, gallery: GalleryDep, audit: AuditDep
) -> NamedClusterOut:
    """Every face of the cluster is named as the subject; those passing the enrolment quality gate
    (``FACEREC_MIN_FACE_SIZE``, ``_MIN_CONFIDENCE``, ``_MIN_SHARPNESS``) become its templates, so identify
    names the person from then on."""
    gate = lib.enrol_gate
    named = await run_in_threadpool(
        lambda: ops.name_cluster(
            lib, gallery=gallery, cluster_id=cluster_id, gate=gate, name=body.name, subject_id=body.subject_id
        )
    )
    target = {"cluster_id": cluster_id, "subject_id": named.subject.id, "faces": named.faces}
    await run_in_threadpool(lambda: audit.record("cluster.name", actor=actor_of(key), target=target))
    return NamedClusterOut(
        subject_id=named.subject.id, subject_name=named.subject.name, faces=named.faces, enrolled=named.enrolled
    )


@router.post(
    "/clusters/{cluster_id}/merge",
    response_model=ClusterOut,
    summary="Merge another cluster into this one",
    responses=errors(*AUTH, 404, 409, 415, 422),
)
async def merge_clusters(
    cluster_id: ClusterId,
    body: Annotated[MergeClusters, Body(openapi_examples={"merge": {"value": {"cluster_id": 7}}})],
    _: AdminKey,
    lib: LibraryDep,
) -> ClusterOut:
    """The other cluster's faces join this one, and every later re-clustering keeps all of them together (until
    one is taken out with "not this person")."""
    size = await run_in_threadpool(lambda: ops.merge_clusters(lib, into=cluster_id, other=body.cluster_id))
    faces = await run_in_threadpool(lib.store.cluster_faces, cluster_id)
    return ClusterOut(id=cluster_id, size=size, sample_face_ids=[f.id for f in faces[:SAMPLE_FACES]])


@router.delete(
    "/clusters/{cluster_id}/faces/{face_id}",
    response_model=RemovedFace,
    summary='"Not this person": take a face out of a cluster, for good',
    responses=errors(*AUTH, 404, 409),
)
async def remove_face(cluster_id: ClusterId, face_id: FaceId, _: AdminKey, lib: LibraryDep) -> RemovedFace:
    """The face moves to a cluster of its own and is kept apart from this cluster's faces by every later
    re-clustering (cannot-link constraints)."""
    new_id = await run_in_threadpool(lambda: ops.remove_face(lib, cluster_id=cluster_id, face_id=face_id))
    return RemovedFace(face_id=face_id, cluster_id=new_id)


@router.post(
    "/clusters/recluster",
    response_model=ReclusterOut,
    summary="Re-cluster every unnamed face now (also runs in the background)",
    responses=errors(*AUTH),
    openapi_extra={
        "requestBody": {
            "required": False,
            "content": {"application/json": {"schema": {"type": "object"}, "example": {}}},
        }
    },
)
async def recluster(_: AdminKey, lib: LibraryDep) -> ReclusterOut:
    res = await run_in_threadpool(ops.recluster_all, lib)
    return ReclusterOut(faces=res.faces, clusters=res.clusters, changed=res.changed, seconds=res.seconds)
