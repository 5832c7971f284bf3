"""The web page's live webcam mode: one frame at a time in, tracked faces with their names out."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field

from service.auth import AdmitFirst
from service.deps import AnalyzerDep, RecognizeKey, RunnerDep
from service.media import MediaDep, pipeline_config
from service.nul_guard import RequestModel
from service.query_check import reads_own_query
from service.routes.docs import errors, image_body
from service.schemas import BoxOut
from service.uploads import read_payload
from service.video.pipeline import FrameResult, TrackPipeline

router = APIRouter(prefix="/v1/live", tags=["live"], route_class=AdmitFirst)


class LiveParams(RequestModel):
    model_config = ConfigDict(extra="forbid")
    session: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{8,64}$", description="A random id the client picks.")]


class LiveFaceOut(BaseModel):
    """A tracked face: ``name``/``subject_id`` null and ``decided`` false while the track is being decided;
    after the decision, null means unknown."""

    track_id: int
    box: BoxOut
    decided: bool
    subject_id: str | None
    name: str | None
    velocity: tuple[float, float] = Field(description="Box motion, px/s (x, y): lets a client move it between frames.")


class LiveFrameOut(BaseModel):
    width: int
    height: int
    faces: list[LiveFaceOut]


@router.post(
    "/frames",
    response_model=LiveFrameOut,
    summary="Track one webcam frame of a live session",
    responses=errors(401, 403, 413, 415, 422, 429, 503),
    openapi_extra=image_body({"image": "One video frame (JPEG)."}, LiveParams, {"session": "tab-3f9a2c71"}),
)
@reads_own_query
async def live_frame(
    request: Request, key: RecognizeKey, analyzer: AnalyzerDep, runner: RunnerDep, media: MediaDep
) -> LiveFrameOut:
    """Send a tab's frames in order with the same ``session``: faces keep their ``track_id`` from frame to frame,
    and each track is named once, by voting over its best views with identify's threshold. Nothing is stored."""
    payload = await read_payload(request)
    params = payload.params(LiveParams, images=("image",))
    image = payload.one("image")
    if image is None:
        raise RequestValidationError([{"loc": ("body", "image"), "msg": "an image is required", "type": "value_error"}])
    settings = request.app.state.settings

    def track() -> tuple[tuple[int, int], FrameResult]:
        rgb = analyzer.load_image(image)
        config = pipeline_config(settings, analyzer, live=True, detector=media.detector())
        new = lambda: TrackPipeline(analyzer, lambda: request.app.state.gallery, config)  # noqa: E731
        return (int(rgb.shape[1]), int(rgb.shape[0])), media.live.process((key.id, params.session), rgb, new)

    ((width, height), result), _ = await runner.run(track)
    faces = [
        LiveFaceOut(
            track_id=f.track_id,
            box=BoxOut(**f.box.to_dict()),
            decided=f.decided,
            subject_id=f.subject_id,
            name=f.name,
            velocity=(round(f.velocity[0], 1), round(f.velocity[1], 1)),
        )
        for f in result.faces
    ]
    return LiveFrameOut(width=width, height=height, faces=faces)
