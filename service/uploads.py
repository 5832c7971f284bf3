"""Read images from a request: multipart files or base64 JSON, under a byte limit enforced while streaming.

Multipart: file fields ``image``, ``image_a``, ``image_b`` or ``images`` (repeatable) plus plain form fields.
JSON: the same names with ``_base64`` appended (``images_base64`` is a list), plus plain fields. Either way
the route receives a :class:`Payload` of raw bytes per field and the other fields as strings or JSON values.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any, TypeVar

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from embeddings.errors import InvalidImage
from service.errors import UnsupportedMediaType, envelope

MAX_FILES = 100
"""Most images (and most other fields) in one request, multipart or JSON."""
M = TypeVar("M", bound=BaseModel)


@dataclass
class Payload:
    """Images by field name (bytes, in upload order), every other field, whether they came as JSON and the
    names of the query parameters."""

    files: dict[str, list[bytes]] = field(default_factory=dict)
    fields: dict[str, Any] = field(default_factory=dict)
    as_json: bool = False
    query: tuple[str, ...] = ()

    def one(self, name: str) -> bytes | None:
        """The single image in ``name`` (None when absent); several where one is expected is a 422."""
        items = self.files.get(name, [])
        if len(items) > 1:
            raise RequestValidationError([_err(name, "exactly one image is expected")])
        return items[0] if items else None

    def params(self, model: type[M], *, images: Collection[str] | None = None) -> M:
        """Validate the non-file fields with ``model``; failures become the 422 envelope.

        ``images`` names the image fields the route reads. Given, nothing else is taken either: an image under
        another name, a plain field under an image's name and any query parameter are each a 422 naming the
        fields the endpoint takes (with a ``model`` that forbids extra fields, so is an unknown plain field)."""
        fields = self.fields if images is None else {k: v for k, v in self.fields.items() if k not in images}
        problems = [] if images is None else self._strays(model, images)
        try:
            params = model.model_validate(fields)
        except ValidationError as exc:
            found = exc.errors(include_url=False, include_context=False)
            if images is not None:
                takes = self._takes(model, images)
                found = [
                    {**e, "msg": f"unknown field; {takes}"} if e["type"] == "extra_forbidden" else e for e in found
                ]
            raise RequestValidationError([*problems, *found]) from exc
        if problems:
            raise RequestValidationError(problems)
        return params

    def _spelt(self, name: str) -> str:
        """An image field's name as the client sent it."""
        return f"{name}_base64" if self.as_json else name

    def _takes(self, model: type[BaseModel], images: Collection[str]) -> str:
        names = [self._spelt(n) for n in images] + list(model.model_fields)
        return "this endpoint takes " + ", ".join(f"`{n}`" for n in names)

    def _strays(self, model: type[BaseModel], images: Collection[str]) -> list[dict[str, Any]]:
        """The 422 errors of what the route would not read (see :meth:`params`)."""
        takes = self._takes(model, images)
        out = [
            {
                "loc": ("query", q),
                "msg": f"unknown query parameter: send the fields in the body; {takes}",
                "type": "extra_forbidden",
            }
            for q in self.query
        ]
        out += [_err(self._spelt(n), f"unknown image field; {takes}") for n in self.files if n not in images]
        as_image = "an image goes in as a file (multipart/form-data) or as base64 in `{}_base64` (JSON)"
        out += [_err(n, as_image.format(n)) for n in self.fields if n in images]
        return out


def _err(name: str, msg: str) -> dict[str, Any]:
    return {"loc": ("body", name), "msg": msg, "type": "value_error"}


def _b64(name: str, value: Any) -> bytes:
    if not isinstance(value, str):
        raise RequestValidationError([_err(name, "must be a base64 string")])
    if value.startswith("data:") and "," in value:  # a data URL from a browser
        value = value.split(",", 1)[1]
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidImage(f"{name} is not valid base64") from exc


async def read_payload(request: Request) -> Payload:
    """Parse the body by its content type; 415 for anything but multipart/form-data or JSON."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    payload = Payload(query=tuple(dict.fromkeys(request.query_params.keys())))
    if ctype == "multipart/form-data":
        form = await request.form(max_files=MAX_FILES, max_fields=MAX_FILES)
        for key, value in form.multi_items():
            if isinstance(value, UploadFile):
                payload.files.setdefault(key, []).append(await value.read())
                await value.close()
            else:
                payload.fields[key] = value
        return payload
    if ctype == "application/json" or ctype.endswith("+json"):
        try:
            body = json.loads(await request.body() or b"null")
        except (ValueError, RecursionError) as exc:  # RecursionError: nesting too deep to parse
            raise RequestValidationError([_err("body", "the body is not valid JSON")]) from exc
        if not isinstance(body, dict):
            raise RequestValidationError([_err("body", "the JSON body must be an object")])
        payload.as_json = True
        for key, value in body.items():
            if key.endswith("_base64"):
                name = key.removesuffix("_base64")
                values = value if isinstance(value, list) else [value]
                if len(values) > MAX_FILES:  # the multipart limit, for the same images sent as JSON
                    raise RequestValidationError([_err(key, f"at most {MAX_FILES} images in one request")])
                payload.files[name] = [_b64(key, v) for v in values]
            else:
                payload.fields[key] = value
        return payload
    raise UnsupportedMediaType(
        f"content type {ctype or '(none)'!r} is not supported: send multipart/form-data or application/json"
    )


class BodyLimitMiddleware:
    """Refuse bodies over ``max_bytes``: at once from Content-Length, else while counting streamed chunks; and a
    body whose next part does not arrive within ``idle_s`` seconds (408: a stalled client would hold its
    connection, its upload file and its worker for ever).

    ``limits`` gives other limits to paths (exact match), each with the setting that names it, e.g. the video
    upload limit ``{"/v1/videos": (1 << 30, "FACEREC_VIDEO_MAX_UPLOAD_BYTES")}``."""

    def __init__(
        self,
        app: ASGIApp,
        max_bytes: int,
        limits: dict[str, tuple[int, str]] | None = None,
        *,
        idle_s: float = 60.0,
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.limits = limits or {}
        self.idle_s = idle_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit, setting = self.limits.get(scope.get("path", ""), (self.max_bytes, "FACEREC_MAX_UPLOAD_BYTES"))
        message = f"the request body is over the limit of {limit} bytes ({setting})"
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            await envelope(413, "payload_too_large", message, {"Connection": "close"})(scope, receive, send)
            return
        seen, body_done = 0, False

        async def counting_receive() -> Message:
            nonlocal seen, body_done
            if body_done:  # waiting for the client to go (a streamed response): no deadline
                return await receive()
            try:
                msg = await asyncio.wait_for(receive(), self.idle_s)
            except TimeoutError:
                stalled = f"no part of the request body arrived for {self.idle_s:g} s (FACEREC_BODY_IDLE_TIMEOUT_S)"
                raise HTTPException(status_code=408, detail=stalled, headers={"Connection": "close"}) from None
            body_done = msg["type"] != "http.request" or not msg.get("more_body", False)
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > limit:
                    # an HTTPException, so that FastAPI's own body parsing (JSON routes) passes it on
                    # instead of turning it into a 400; the handler maps it to the envelope
                    raise HTTPException(status_code=413, detail=message, headers={"Connection": "close"})
            return msg

        await self.app(scope, counting_receive, send)
