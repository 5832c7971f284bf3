"""Live camera streams (admin scope): add, list with health, read, change, remove."""

from __future__ import annotations

from urllib.parse import urlsplit

from fastapi import APIRouter, Response
from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.concurrency import run_in_threadpool

from service.auth import AdmitFirst
from service.config import MIN_FPS
from service.deps import AdminKey
from service.errors import ServiceError
from service.media import MediaDep
from service.nul_guard import RequestModel
from service.routes.docs import AUTH, deletion, errors
from service.schemas import ErrorResponse
from service.streams.store import DuplicateStream, StreamNotFound, TooManyStreams
from service.video.decode import CAMERA_SOURCE, redact

router = APIRouter(prefix="/v1/streams", tags=["streams"], route_class=AdmitFirst)
URL_SCHEMES = ("rtsp://", "rtsps://", "http://", "https://")
ENCODE_CREDENTIALS = (
    "a '#', or an '@' after the host: percent-encode these characters in a user name or password "
    "(%23 for #, %2F for /, %3F for ?, %40 for @)"
)


class StreamMissing(ServiceError):
    status, code = 404, "not_found"


class StreamLimit(ServiceError):
    status, code = 409, "too_many_streams"


class StreamExists(ServiceError):
    status, code = 409, "stream_exists"


def check_stream_url(url: str) -> str:
    """``url`` when it is a source a stream may read (see ``StreamCreate.url``), else ValueError saying why."""
    if any(ch <= " " or ch == "\x7f" for ch in url):  # FFmpeg would send a CR/LF into the camera's request
        raise ValueError("must not contain spaces or control characters (percent-encode them, e.g. %20)")
    if CAMERA_SOURCE.fullmatch(url):
        return url
    if not url.lower().startswith(URL_SCHEMES):
        raise ValueError("must be an rtsp(s):// or http(s):// URL, /dev/videoN or a camera index")
    try:
        parts = urlsplit(url)
        if "#" in url or "@" in parts.path + parts.query:  # rtsp://admin:pa/ss@cam: would be shown unredacted
            raise ValueError(ENCODE_CREDENTIALS)
        host, port = parts.hostname, parts.port  # port: 0-65535 or None
    except ValueError as exc:  # e.g. an unclosed IPv6 literal, a port that is not a number or past 65535
        raise ValueError(f"not a valid URL: {exc}") from None
    if not host:
        raise ValueError("the URL has no host")
    if port == 0:
        raise ValueError("not a valid URL: port 0")
    return url


class StreamCreate(RequestModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"name": "front door", "url": "rtsp://door:secret@127.0.0.1:8554/stream1", "fps": 5}]
        },
    )

    name: str = Field(min_length=1, max_length=200)
    url: str = Field(
        min_length=1,
        max_length=2000,
        description="rtsp(s):// or http(s):// (MJPEG or anything FFmpeg reads), or a local camera: /dev/videoN or N.",
    )
    fps: float = Field(
        default=5.0, ge=MIN_FPS, le=30.0, description="Most frames per second analysed; more are dropped."
    )

    @field_validator("url")
    @classmethod
    def _source(cls, url: str) -> str:
        return check_stream_url(url)


class StreamUpdate(RequestModel):
    """The fields to change; one left out (or null) stays as it is. Any other field is a 422."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"url": "rtsp://door:new-secret@127.0.0.1:8554/stream1"}, {"fps": 2}]},
    )

    name: str | None = Field(None, min_length=1, max_length=200)
    url: str | None = Field(
        None, min_length=1, max_length=2000, description="As in `POST /v1/streams`: the stream reconnects to it."
    )
    fps: float | None = Field(
        None, ge=MIN_FPS, le=30.0, description="Most frames per second analysed; the stream reconnects with it."
    )

    @field_validator("url")
    @classmethod
    def _source(cls, url: str | None) -> str | None:
        return None if url is None else check_stream_url(url)


class StreamHealth(BaseModel):
    state: str = Field(
        description="connecting | running | reconnecting | stopped | waiting (no replica has reported reading it yet)"
    )
    fps_in: float = Field(description="Frames read per second (last 5 s).")
    fps_processed: float = Field(description="Frames analysed per second (last 5 s).")
    frames_in: int
    frames_processed: int
    frames_dropped: int
    lag_ms: float | None = Field(description="Read to end of analysis of the last analysed frame, ms.")
    event_latency_ms_p50: float | None = Field(description="Median frame read to event stored, ms.")
    events: int
    reconnects: int
    last_error: str | None
    last_error_at: float | None = Field(
        None, description="When `last_error` happened, Unix s (before `connected_since`: the stream recovered since)."
    )
    connected_since: float | None
    next_attempt_at: float | None = Field(
        None,
        description="While the source is failing: when the stream will try it again, Unix s (waits of 0.25 s doubling "
        "up to `FACEREC_STREAM_MAX_BACKOFF_S`, +-20 %); null while connected or connecting.",
    )


class StreamOut(BaseModel):
    id: str
    name: str
    url: str = Field(description="The URL with its credentials redacted.")
    fps: float
    created_at: float
    health: StreamHealth


@router.post(
    "",
    status_code=201,
    response_model=StreamOut,
    summary="Watch a live stream",
    responses={
        **errors(*AUTH, 415, 422),
        409: {
            "model": ErrorResponse,
            "description": "`FACEREC_STREAMS_MAX` streams run already (`too_many_streams`), or a stream reads this "
            "source already (`stream_exists`, naming it; the same URL up to its credentials, the case of its host "
            "and a default port).",
        },
    },
)
async def add_stream(body: StreamCreate, media: MediaDep, _: AdminKey) -> StreamOut:
    """Stored (it survives a restart) and started at once; reconnects by itself. Every person tracked on it gives
    one event (``GET /v1/events?source=stream:<id>``). One source is read by one stream: adding it again is a
    409 ``stream_exists``."""
    try:
        view = await run_in_threadpool(lambda: media.streams.add(name=body.name, url=body.url, fps=body.fps))
    except TooManyStreams as exc:
        raise StreamLimit(str(exc)) from exc
    except DuplicateStream as exc:
        raise already_read(exc) from exc
    return StreamOut.model_validate(view)


def already_read(exc: DuplicateStream) -> StreamExists:
    same = exc.existing
    return StreamExists(
        f"stream {same.id} ({same.name!r}, {redact(same.url)}) reads this source already: use it, or delete it first"
    )


@router.get("", response_model=list[StreamOut], summary="List streams with their health", responses=errors(*AUTH))
async def list_streams(media: MediaDep, _: AdminKey) -> list[StreamOut]:
    return [StreamOut.model_validate(v) for v in await run_in_threadpool(media.streams.views)]


@router.get("/{stream_id}", response_model=StreamOut, summary="A stream and its health", responses=errors(*AUTH, 404))
async def get_stream(stream_id: str, media: MediaDep, _: AdminKey) -> StreamOut:
    try:
        return StreamOut.model_validate(await run_in_threadpool(media.streams.view, stream_id))
    except StreamNotFound as exc:
        raise StreamMissing(f"no stream {stream_id!r}") from exc


@router.patch(
    "/{stream_id}",
    response_model=StreamOut,
    summary="Change a stream's name, URL or fps",
    responses={
        **errors(*AUTH, 404, 415, 422),
        409: {
            "model": ErrorResponse,
            "description": "Another stream reads the new URL's source (`stream_exists`, naming it); the stream's own "
            "camera under other credentials is not another source.",
        },
    },
)
async def update_stream(stream_id: str, body: StreamUpdate, media: MediaDep, _: AdminKey) -> StreamOut:
    """Changed in place: its id, and so its events' ``source`` (``stream:<id>``), stay. A new URL (a camera's new
    password, or another camera) or fps restarts its reader with them at once (with replicas on PostgreSQL: on the
    replica reading it, at that replica's next lease renewal, within about 5 s); a new name alone does not
    reconnect.
    Fields left out stay; an empty body changes nothing. Validated as ``POST /v1/streams``; a refused change
    changes nothing."""
    try:
        view = await run_in_threadpool(
            lambda: media.streams.update(stream_id, name=body.name, url=body.url, fps=body.fps)
        )
    except StreamNotFound as exc:
        raise StreamMissing(f"no stream {stream_id!r}") from exc
    except DuplicateStream as exc:
        raise already_read(exc) from exc
    return StreamOut.model_validate(view)


@router.delete("/{stream_id}", **deletion("Stop and remove a stream", 404))
async def delete_stream(stream_id: str, media: MediaDep, _: AdminKey) -> Response:
    try:
        await run_in_threadpool(media.streams.delete, stream_id)
    except StreamNotFound as exc:
        raise StreamMissing(f"no stream {stream_id!r}") from exc
    return Response(status_code=204)
