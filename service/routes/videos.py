"""Video files: upload one to be tracked and recognised in the background, read the result, delete it."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.concurrency import run_in_threadpool

from service.auth import AdmitFirst
from service.config import MIN_FPS
from service.deps import RecognizeKey
from service.errors import ServiceError
from service.gallery.sqlite.errors import storage_errors
from service.media import MediaDep
from service.nul_guard import RequestModel, check_text
from service.routes.cursors import parse_time_id_cursor, time_id_cursor
from service.routes.docs import AUTH, deletion, errors
from service.video.jobstore import Job, JobNotFound
from service.video.upload import receive_video

router = APIRouter(prefix="/v1/videos", tags=["videos"], route_class=AdmitFirst)


class VideoNotFound(ServiceError):
    status, code = 404, "not_found"


class VideoParams(RequestModel):
    model_config = ConfigDict(extra="forbid")  # a misspelt `fsp` is refused, not run at the default rate
    fps: float | None = Field(default=None, ge=MIN_FPS, le=60.0, description="Frames per second of video analysed.")


class TrackOut(BaseModel):
    """One person seen: ``subject_id`` null = unknown; ``distance`` L2 in [0, 2]; times in video seconds."""

    track_id: int
    subject_id: str | None
    name: str | None
    first_s: float
    last_s: float
    frames: int
    distance: float | None
    estimated_false_identification_rate: float | None


class VideoOut(BaseModel):
    id: str
    status: Literal["queued", "running", "done", "failed"]
    filename: str
    bytes: int
    fps: float | None
    progress: float = Field(description="Share of the video processed, 0 to 1.")
    duration_s: float | None
    error: str | None
    created_at: float
    updated_at: float
    tracks: list[TrackOut] | None


class VideoPage(BaseModel):
    items: list[VideoOut]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null on the last page.")


class VideoAccepted(BaseModel):
    id: str
    status: str


def video_out(job: Job) -> VideoOut:
    data: dict[str, Any] = {k: getattr(job, k) for k in VideoOut.model_fields}
    return VideoOut.model_validate(data)


@router.post(
    "",
    status_code=202,
    response_model=VideoAccepted,
    summary="Upload a video to find and recognise the people in it",
    responses=errors(*AUTH, 413, 415, 422, 503, 507),
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "required": ["video"],
                        "properties": {
                            "video": {"type": "string", "format": "binary", "description": "The video file."},
                            "fps": {"type": "number", "description": "Frames per second analysed (default 5)."},
                        },
                    },
                    "example": {"fps": 5},
                }
            },
        }
    },
)
async def upload_video(request: Request, response: Response, media: MediaDep, _: RecognizeKey) -> VideoAccepted:
    """The upload is streamed to disk (limit ``FACEREC_VIDEO_MAX_UPLOAD_BYTES``) and queued; poll
    ``GET /v1/videos/{id}`` until ``status`` is ``done`` (with ``tracks``: one per person seen) or ``failed``."""
    with storage_errors("the video upload dir"):  # full (507) or refusing writes (503), the upload removed
        job_id, path = media.jobs.new_path()
        upload = await receive_video(request, path)
    try:
        check_text(upload.filename, "video.filename")
        params = VideoParams.model_validate(upload.fields)
    except RequestValidationError:
        path.unlink(missing_ok=True)
        raise
    except ValidationError as exc:
        path.unlink(missing_ok=True)
        raise RequestValidationError(exc.errors(include_url=False, include_context=False)) from exc
    job = await run_in_threadpool(
        lambda: media.jobs.create(job_id, filename=upload.filename, path=path, fps=params.fps, size=upload.size)
    )
    media.runner.wake()
    response.headers["Location"] = f"/v1/videos/{job.id}"
    return VideoAccepted(id=job.id, status=job.status)


@router.get(
    "", response_model=VideoPage, summary="List video jobs, newest first, paginated", responses=errors(*AUTH, 422)
)
async def list_videos(
    media: MediaDep,
    _: RecognizeKey,
    limit: Annotated[int, Query(ge=1, le=100, description="Page size.")] = 20,
    cursor: Annotated[str | None, Query(description="`next_cursor` of the previous page.")] = None,
) -> VideoPage:
    after = parse_time_id_cursor(cursor)
    jobs = await run_in_threadpool(lambda: media.jobs.list(limit=limit + 1, after=after))
    last = jobs[limit - 1] if len(jobs) > limit else None
    return VideoPage(
        items=[video_out(j) for j in jobs[:limit]],
        next_cursor=None if last is None else time_id_cursor(last.created_at, last.id),
    )


@router.get(
    "/{video_id}", response_model=VideoOut, summary="A video job's status and tracks", responses=errors(*AUTH, 404)
)
async def get_video(video_id: str, media: MediaDep, _: RecognizeKey) -> VideoOut:
    try:
        return video_out(await run_in_threadpool(media.jobs.get, video_id))
    except JobNotFound as exc:
        raise VideoNotFound(f"no video {video_id!r}") from exc


@router.delete("/{video_id}", **deletion("Delete a video job", 404))
async def delete_video(video_id: str, media: MediaDep, _: RecognizeKey) -> Response:
    """Stops the job if it runs and deletes it and its upload. Events already recorded are kept."""
    try:
        media.runner.cancel(video_id)
        job = await run_in_threadpool(media.jobs.delete, video_id)
    except JobNotFound as exc:
        raise VideoNotFound(f"no video {video_id!r}") from exc
    # the upload as this data dir keeps it, not the path the row names: a data dir restored elsewhere (or another
    # replica's job: its own process removes the file) must not delete a file outside it
    (media.jobs.uploads / f"{job.id}.video").unlink(missing_ok=True)
    return Response(status_code=204)
