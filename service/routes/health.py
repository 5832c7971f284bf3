"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.concurrency import run_in_threadpool

from service.deps import MetricsDep
from service.schemas import Health, Readiness

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="Liveness: the process answers", response_model=Health)
async def healthz() -> Health:
    return Health()


@router.get(
    "/readyz",
    summary="Readiness: the model is loaded and warm and the gallery is open",
    response_model=Readiness,
    responses={
        503: {
            "model": Readiness,
            "description": "Not ready: `reason` says why (model loading or failed, gallery closed).",
        }
    },
)
async def readyz(request: Request) -> JSONResponse:
    state = request.app.state
    analyzer = state.analyzer
    if analyzer is None:
        reason = state.load_error or "the model is still loading"
    else:
        reason = None if state.gallery is not None else "the gallery is closed"
    body = Readiness(
        ready=analyzer is not None and state.gallery is not None,
        model=analyzer is not None,
        gallery=state.gallery is not None,
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
    stats = await run_in_threadpool(gallery.stats) if gallery is not None else None
    body = registry.render(subjects=int(stats.subjects) if stats else None, faces=int(stats.faces) if stats else None)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
