"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.concurrency import run_in_threadpool

from service.deps import MetricsDep
from service.gallery.errors import GalleryError
from service.schemas import Health, Readiness

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="Liveness: the process answers", response_model=Health)
async def healthz() -> Health:
    return Health()


@router.get(
    "/readyz",
    summary="Readiness: the model is loaded and warm, the gallery is open and its storage answers",
    response_model=Readiness,
    responses={
        503: {
            "model": Readiness,
            "description": "Not ready: `reason` says why (model loading or failed, gallery closed, its database "
            "or vector index unavailable).",
        }
    },
)
async def readyz(request: Request) -> JSONResponse:
    state = request.app.state
    analyzer, gallery = state.analyzer, state.gallery
    gallery_why = None if gallery is not None else "the gallery is closed"
    if gallery is not None:
        try:
            await run_in_threadpool(gallery.check_available)
        except GalleryError as e:  # the database (or vector engine) does not answer: every request would 503
            gallery_why = str(e).split(";")[0]
    reason = (state.load_error or "the model is still loading") if analyzer is None else gallery_why
    body = Readiness(
        ready=analyzer is not None and gallery_why is None,
        model=analyzer is not None,
        gallery=gallery_why is None,
        model_id=analyzer.model_id if analyzer is not None else None,
        threshold=analyzer.threshold if analyzer is not None else None,
        reason=reason,
    )
    return JSONResponse(body.model_dump(), status_code=200 if body.ready else 503)


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text format."}},
)
async def metrics(request: Request, registry: MetricsDep) -> Response:
    gallery = request.app.state.gallery
    try:
        stats = await run_in_threadpool(gallery.stats) if gallery is not None else None
    except GalleryError:  # its database is away: the process's own series still answer (the gauges keep their value)
        stats = None
    body = registry.render(subjects=int(stats.subjects) if stats else None, faces=int(stats.faces) if stats else None)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
