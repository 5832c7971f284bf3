"""OpenAPI helpers shared by the routers: error responses and the two ways to send images."""

from __future__ import annotations

import hashlib
from typing import Annotated, Any

from fastapi import Header, Response
from pydantic import BaseModel

from service.errors import ERROR_STATUS_TEXT
from service.schemas import ErrorResponse

_EXAMPLE_B64 = "/9j/4AAQSkZJRgABAQAAAQABAAD..."


AUTH = (401, 403)
"""What every ``/v1`` route may answer: no or unknown API key, a key without the endpoint's scope."""


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` entries documenting the error envelope for each status."""
    return {s: {"model": ErrorResponse, "description": ERROR_STATUS_TEXT[s]} for s in statuses}


def deletion(summary: str, *statuses: int) -> dict[str, Any]:
    """The route decorator's arguments for a deletion: 204 with no body; errors ``AUTH`` + ``statuses``."""
    return {"status_code": 204, "response_class": Response, "summary": summary, "responses": errors(*AUTH, *statuses)}


def crop(summary: str) -> dict[str, Any]:
    """The route decorator's arguments for a face crop: a PNG (:func:`png_crop`); errors ``AUTH`` + 404."""
    responses = {200: {"content": {"image/png": {}}}, **errors(*AUTH, 404)}
    return {"response_class": Response, "summary": summary, "responses": responses}


IfNoneMatch = Annotated[
    str | None, Header(description="The crop's `ETag` from an earlier answer: 304 without the bytes if unchanged.")
]


def png_crop(png: bytes, if_none_match: str | None = None) -> Response:
    """A stored face crop (PNG): kept only by the client that asked (it is biometric data), which must ask again
    before each use (``no-cache``), so that an erased face's crop is not shown from a cache; an unchanged crop
    is answered 304 without its bytes (``ETag``: a digest of the PNG; ``if_none_match``: the request's
    ``If-None-Match``)."""
    tag = '"' + hashlib.sha256(png).hexdigest()[:32] + '"'
    headers = {"Cache-Control": "private, no-cache", "ETag": tag}
    if if_none_match is not None and tag in (t.strip().removeprefix("W/") for t in if_none_match.split(",")):
        return Response(status_code=304, headers=headers)
    return Response(png, media_type="image/png", headers=headers)


def form_fields(params: type[BaseModel] | None) -> dict[str, dict[str, Any]]:
    """The JSON schemas of a parameter model's fields, as plain form fields: an optional field (``X | None``)
    is documented as ``X``, since leaving it out is how a client asks for the default."""
    if params is None:
        return {}
    fields: dict[str, dict[str, Any]] = {}
    for name, schema in params.model_json_schema()["properties"].items():
        schema = {k: v for k, v in schema.items() if k != "title"}
        options = [o for o in schema.pop("anyOf", []) if o.get("type") != "null"]
        if len(options) == 1:
            schema = {**options[0], **schema}
        if schema.get("default", 0) is None:
            del schema["default"]
        fields[name] = schema
    return fields


def image_body(files: dict[str, str], params: type[BaseModel] | None, example: dict[str, Any]) -> dict[str, Any]:
    """``openapi_extra`` describing a body sent as multipart files or as base64 JSON.

    ``files`` maps a field name to its description (``images`` is an array of files); ``params`` is the
    pydantic model of the plain fields (their types, bounds and texts come from it); ``example`` holds the
    plain fields' example values.
    """
    fields = form_fields(params)
    multipart: dict[str, Any] = {}
    as_json: dict[str, Any] = {}
    for name, text in files.items():
        if name == "images":
            multipart[name] = {
                "type": "array",
                "items": {"type": "string", "format": "binary"},
                "description": text,
            }
            as_json[f"{name}_base64"] = {"type": "array", "items": {"type": "string"}, "description": text}
        else:
            multipart[name] = {"type": "string", "format": "binary", "description": text}
            as_json[f"{name}_base64"] = {"type": "string", "description": text + " (base64 or a data URL)"}
    json_example = {
        **{f"{n}_base64": [_EXAMPLE_B64] if n == "images" else _EXAMPLE_B64 for n in files},
        **example,
    }
    return {
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {"type": "object", "properties": {**multipart, **fields}},
                    "example": example,
                },
                "application/json": {
                    "schema": {"type": "object", "properties": {**as_json, **fields}},
                    "example": json_example,
                },
            },
        }
    }
