"""Map domain errors to HTTP: one envelope ``{"error": {"code", "message"}}`` for every failure.

Library errors (``embeddings.errors``), gallery errors and the service's own errors are mapped here and
nowhere else; FastAPI's validation errors and HTTP exceptions are wrapped in the same envelope; anything
unexpected becomes a 500 ``internal_error`` that carries no exception text.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from embeddings.errors import FaceRecError, ImageTooLarge, InvalidImage, LowQuality, MultipleFaces, NoFace
from service.gallery import (
    FaceNotFound,
    GalleryLocked,
    InvalidCursor,
    ModelMismatch,
    StorageFull,
    StorageUnavailable,
    SubjectNotFound,
)
from service.gallery.errors import VectorIndexUnavailable

log = logging.getLogger("facerec.service")


class ServiceError(Exception):
    """An error the service raises on purpose, with its HTTP ``status`` and stable ``code``."""

    status = 400
    code = "bad_request"

    def __init__(self, message: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.headers = headers


class PayloadTooLarge(ServiceError):
    status, code = 413, "payload_too_large"


class UnsupportedMediaType(ServiceError):
    status, code = 415, "unsupported_media_type"


class BadRequest(ServiceError):
    status, code = 422, "validation_error"


class Unauthorized(ServiceError):
    status, code = 401, "unauthorized"


class Forbidden(ServiceError):
    status, code = 403, "forbidden"


class Overloaded(ServiceError):
    status, code = 429, "overloaded"


class NotReady(ServiceError):
    status, code = 503, "not_ready"


# Library and gallery errors -> (status, code). Order matters: subclasses first.
DOMAIN_ERRORS: list[tuple[type[Exception], int, str]] = [
    (ImageTooLarge, 413, "payload_too_large"),
    (InvalidImage, 422, "invalid_image"),
    (NoFace, 422, "no_face"),
    (MultipleFaces, 422, "multiple_faces"),
    (LowQuality, 422, "low_quality"),
    (SubjectNotFound, 404, "not_found"),
    (FaceNotFound, 404, "not_found"),
    (ModelMismatch, 409, "model_mismatch"),
    (InvalidCursor, 422, "validation_error"),
    (GalleryLocked, 503, "gallery_locked"),
    (StorageFull, 507, "insufficient_storage"),
    (VectorIndexUnavailable, 503, "vector_index_unavailable"),
    (StorageUnavailable, 503, "storage_unavailable"),
]

ERROR_STATUS_TEXT = {
    401: "Missing or unknown API key (`unauthorized`).",
    403: "The key lacks the scope this endpoint needs (`forbidden`).",
    404: "Unknown subject or face (`not_found`).",
    409: "The gallery holds faces of another model only (`model_mismatch`).",
    413: "Body over `FACEREC_MAX_UPLOAD_BYTES` or image over the pixel limit (`payload_too_large`).",
    415: "Body neither multipart/form-data nor JSON (`unsupported_media_type`).",
    422: "Invalid input: `validation_error`, `invalid_image`, `no_face`, `multiple_faces`, `low_quality`.",
    429: "Too many requests waiting for the model (`overloaded`).",
    503: "The model is still loading (`not_ready`), or the gallery's storage refuses writes: read-only or I/O "
    "error (`storage_unavailable`; nothing was stored, reads still work), or the vector engine is unreachable "
    "(`vector_index_unavailable`: identify and enrolment wait for it; erasure still works).",
    507: "The gallery's storage is full (`insufficient_storage`): nothing was stored; reads still work.",
}


def envelope(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """The one error response shape."""
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status, headers=headers)


def domain_status(exc: Exception) -> tuple[int, str] | None:
    """``(status, code)`` for a known library or gallery error, else ``None``."""
    for cls, status, code in DOMAIN_ERRORS:
        if isinstance(exc, cls):
            return status, code
    return None


def error_message(exc: Exception) -> str:
    """A message safe to show a client: the library's own message for domain errors."""
    if isinstance(exc, FaceRecError | ServiceError):
        return exc.message
    return str(exc.args[0]) if exc.args else type(exc).__name__


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        loc = ".".join(str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path"))
        parts.append(f"{loc or 'request'}: {err.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    429: "overloaded",
}


def install(app: FastAPI) -> None:
    """Register the handlers that turn every failure into the envelope."""

    async def service_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ServiceError)
        return envelope(exc.status, exc.code, exc.message, exc.headers)

    async def domain_error(_: Request, exc: Exception) -> JSONResponse:
        mapped = domain_status(exc)
        if mapped is None:  # pragma: no cover - every registered class is mapped
            return await unexpected(_, exc)
        return envelope(mapped[0], mapped[1], error_message(exc))

    async def validation_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return envelope(422, "validation_error", _validation_message(exc))

    async def http_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        if exc.status_code == 400:
            # FastAPI and Starlette raise 400 for a body they cannot parse: JSON whose json.loads fails with
            # something other than a decode error (RecursionError on deep nesting, ValueError on a >4300-digit
            # int), a broken multipart stream, too many files. The contract says a bad body is 422.
            return envelope(422, "validation_error", f"body: {exc.detail}")
        code = HTTP_CODES.get(exc.status_code, "http_error")
        return envelope(exc.status_code, code, str(exc.detail), dict(exc.headers or {}) or None)

    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
        return envelope(500, "internal_error", "an unexpected error occurred; it has been logged")

    app.add_exception_handler(ServiceError, service_error)
    for cls, _status, _code in DOMAIN_ERRORS:
        app.add_exception_handler(cls, domain_error)
    app.add_exception_handler(FaceRecError, domain_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(Exception, unexpected)
