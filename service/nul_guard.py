"""No NUL character (U+0000) in any text a request brings: URL path, query, body fields, metadata, file names.

PostgreSQL refuses NUL in ``text`` and ``jsonb`` values, so without this guard a subject named ``"a\\u0000b"`` was
stored by the embedded backend and was a 500 on the shared one. Every backend now answers the same 422
``validation_error`` before anything is read or written: URLs in :class:`NulUrlMiddleware`, bodies in
:class:`RequestModel` (the base of every request model) and upload file names with :func:`check_text`.
"""

from __future__ import annotations

from typing import Any

from fastapi.exceptions import RequestValidationError
from pydantic import model_validator
from pydantic_core import PydanticCustomError
from starlette.types import ASGIApp, Receive, Scope, Send

from service.errors import envelope
from service.request_numbers import NoBooleanNumbers

NUL = "\x00"
NUL_RULE = "must not contain a NUL character (U+0000)"


def find_nul(value: Any, where: str = "") -> str | None:
    """The dotted place of the first NUL in ``value`` (a JSON-like tree of dicts, lists and scalars; dict keys
    count too), ``None`` when there is none. ``where`` prefixes the place (``""`` for the value itself). Walks
    the tree with its own stack: a body nested as deep as the JSON parser allows cannot exhaust Python's."""
    todo: list[tuple[Any, str]] = [(value, where)]
    while todo:
        item, place = todo.pop()
        if isinstance(item, str):
            if NUL in item:
                return place or "value"
        elif isinstance(item, dict):
            children = []
            for key, child in item.items():
                if isinstance(key, str) and NUL in key:
                    return (f"{place} key " if place else "key ") + repr(key)
                children.append((child, f"{place}.{key}" if place else str(key)))
            todo.extend(reversed(children))
        elif isinstance(item, list | tuple):
            todo.extend(reversed([(child, f"{place}[{i}]" if place else f"[{i}]") for i, child in enumerate(item)]))
    return None


class RequestModel(NoBooleanNumbers):
    """Base of the request models: a NUL anywhere in the input (field values, nested metadata, keys) is a
    validation error naming where it is; so is a JSON boolean for a number (:mod:`service.request_numbers`)."""

    @model_validator(mode="before")
    @classmethod
    def _no_nul(cls, data: Any) -> Any:
        if (place := find_nul(data)) is not None:
            raise PydanticCustomError("nul_character", "{place} " + NUL_RULE, {"place": place})
        return data


def check_text(value: str | None, name: str) -> None:
    """A 422 ``validation_error`` when ``value`` (e.g. an upload's file name) contains NUL."""
    if value is not None and NUL in value:
        raise RequestValidationError([{"loc": ("body", name), "msg": NUL_RULE, "type": "value_error"}])


class NulUrlMiddleware:
    """Answer 422 ``validation_error`` to a request whose path or query string holds a NUL (``%00``): no route
    sees it (a path parameter or a query filter with NUL can name nothing that is stored)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and (NUL in scope.get("path", "") or b"%00" in scope.get("query_string", b"")):
            await envelope(422, "validation_error", f"the URL {NUL_RULE}")(scope, receive, send)
            return
        await self.app(scope, receive, send)
