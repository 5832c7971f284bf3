"""Stream a multipart video upload straight to a file, never holding it in memory.

The body's size is limited by :class:`service.uploads.BodyLimitMiddleware` (``FACEREC_VIDEO_MAX_UPLOAD_BYTES``
on ``/v1/videos``); this parser writes the ``video`` file part to ``path`` as chunks arrive and collects the
small plain fields (at most 64 KiB in all).
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from python_multipart import MultipartParser
from python_multipart.exceptions import FormParserError, MultipartParseError
from python_multipart.multipart import MultipartState, parse_options_header
from starlette.concurrency import run_in_threadpool

from service.errors import UnsupportedMediaType

MAX_FIELDS_BYTES = 64 * 1024


@dataclass
class VideoUpload:
    """What was received: the file's name as sent, its size (bytes) and the plain fields."""

    filename: str = ""
    size: int = 0
    fields: dict[str, str] = field(default_factory=dict)


@dataclass
class _Part:
    """The multipart part being parsed."""

    headers: dict[bytes, bytes] = field(default_factory=dict)
    hname: bytes = b""
    hvalue: bytes = b""
    name: str = ""
    data: list[bytes] = field(default_factory=list)
    out: IO[bytes] | None = None

    def reset(self) -> None:
        self.headers, self.hname, self.hvalue, self.name, self.data = {}, b"", b"", "", []


def _invalid(msg: str, field: str = "video") -> RequestValidationError:
    return RequestValidationError([{"loc": ("body", field), "msg": msg, "type": "value_error"}])


async def receive_video(request: Request, path: Path, *, file_field: str = "video") -> VideoUpload:
    """Write the ``file_field`` part of a multipart body to ``path``; 415 for another content type, 422 when
    the part is missing or empty or the body is cut short. On failure the partial file is removed."""
    ctype, params = parse_options_header(request.headers.get("content-type", ""))
    boundary = params.get(b"boundary")
    if ctype != b"multipart/form-data" or not boundary:
        raise UnsupportedMediaType("send the video as multipart/form-data with a file field `video`")
    result = VideoUpload()
    part = _Part()
    found = False
    field_bytes = 0

    def on_part_begin() -> None:
        part.reset()

    def on_header_field(data: bytes, start: int, end: int) -> None:
        part.hname += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        part.hvalue += data[start:end]

    def on_header_end() -> None:
        part.headers[part.hname.lower()] = part.hvalue
        part.hname, part.hvalue = b"", b""

    def on_headers_finished() -> None:
        nonlocal found
        _, opts = parse_options_header(part.headers.get(b"content-disposition", b""))
        part.name = opts.get(b"name", b"").decode("utf-8", "replace")
        if part.name == file_field and b"filename" not in opts:
            raise _invalid(f"`{file_field}` must be a file part (with a filename), not a plain form field")
        if part.name != file_field and b"filename" in opts:  # it would be read as a (too large) plain field
            raise _invalid(f"a file in the field `{part.name}`: send the video in the field `{file_field}`", part.name)
        if part.name == file_field:
            if found:
                raise _invalid("exactly one video file is expected")
            found = True
            result.filename = opts.get(b"filename", b"").decode("utf-8", "replace")[:255]
            part.out = open(path, "wb")  # noqa: SIM115 - closed in on_part_end or on failure

    def on_part_data(data: bytes, start: int, end: int) -> None:
        nonlocal field_bytes
        if part.out is not None:
            part.out.write(data[start:end])
            result.size += end - start
        else:
            field_bytes += end - start
            if field_bytes > MAX_FIELDS_BYTES:
                raise _invalid("the form fields are too large")
            part.data.append(data[start:end])

    def on_part_end() -> None:
        if part.out is not None:
            part.out.close()
            part.out = None
        elif part.name:
            if part.name in result.fields:  # which one was meant?
                raise _invalid("this field is given more than once", part.name)
            result.fields[part.name] = b"".join(part.data).decode("utf-8", "replace")

    callbacks = {
        "on_part_begin": on_part_begin,
        "on_header_field": on_header_field,
        "on_header_value": on_header_value,
        "on_header_end": on_header_end,
        "on_headers_finished": on_headers_finished,
        "on_part_data": on_part_data,
        "on_part_end": on_part_end,
    }
    try:
        parser = MultipartParser(boundary, callbacks=callbacks)  # type: ignore[arg-type]
    except FormParserError as exc:  # e.g. a boundary over the parser's 256 bytes
        raise _invalid(f"the multipart body cannot be read: {exc}") from None
    try:
        async for chunk in request.stream():
            parser.write(chunk)
        parser.finalize()
        if parser.state != MultipartState.END:  # the body stopped before its closing boundary
            raise MultipartParseError("it ends before its closing boundary (the upload was cut short)")
    except BaseException as exc:
        if part.out is not None:
            with contextlib.suppress(OSError):  # its buffer cannot be written either (a full disk)
                part.out.close()
        path.unlink(missing_ok=True)
        if isinstance(exc, MultipartParseError):
            raise _invalid(f"the multipart body is malformed: {exc}") from exc
        raise
    if not found or result.size == 0:
        path.unlink(missing_ok=True)
        raise _invalid("a non-empty video file in the field `video` is required")
    await run_in_threadpool(make_durable, path)
    return result


def make_durable(path: Path) -> None:
    """Flush the file's data and its directory entry to the disk (``fsync`` both): a video acknowledged with a
    202 is still whole after a power cut. Seconds for a large upload: call it off the event loop."""
    for target in (path, path.parent):
        fd = os.open(target, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
