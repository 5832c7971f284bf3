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

from embeddings.errors import (
    BadPose,
    FaceRecError,
    ImageTooLarge,
    InvalidImage,
    LowQuality,
    MultipleFaces,
    NoFace,
)
from embeddings.errors import Overloaded as ModelOverloaded
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


# Library and gallery errors -> HTTP status; the code is the class's ``code``. Order matters: subclasses first.
DOMAIN_ERRORS: list[tuple[type[FaceRecError], int]] = [
    (ImageTooLarge, 413),
    (InvalidImage, 422),
    (NoFace, 422),
    (MultipleFaces, 422),
    (BadPose, 422),
    (LowQuality, 422),
    (ModelOverloaded, 429),
    (SubjectNotFound, 404),
    (FaceNotFound, 404),
    (ModelMismatch, 409),
    (InvalidCursor, 422),
    (GalleryLocked, 503),
    (StorageFull, 507),
    (VectorIndexUnavailable, 503),
    (StorageUnavailable, 503),
]

SERVICE_ERRORS: tuple[type[ServiceError], ...] = (
    PayloadTooLarge,
    UnsupportedMediaType,
    BadRequest,
    Unauthorized,
    Forbidden,
    Overloaded,
    NotReady,
)

STATUS_MEANING = {
    401: "Missing or unknown API key",
    403: "The key lacks the scope this endpoint needs",
    404: "Unknown subject or face",
    409: "The gallery holds faces of another model only",
    413: "Body over `FACEREC_MAX_UPLOAD_BYTES` or image over the pixel limit",
    415: "Body neither multipart/form-data nor JSON",
    422: "Invalid input",
    429: "Too many requests waiting for the model",
    503: "The model is still loading, another process holds the gallery, the gallery's storage refuses "
    "writes: read-only or I/O error (nothing was stored, reads still work), or the vector engine is unreachable "
    "(identify and enrolment wait for it; erasure still works)",
    507: "The gallery's storage is full: nothing was stored; reads still work",
}
"""What each documented status means; the codes it carries are added from the error classes."""


def codes_of(status: int) -> list[str]:
    """The stable codes a response of ``status`` may carry, from the service and domain error classes."""
    found = [c.code for c in SERVICE_ERRORS if c.status == status]
    found += [cls.code for cls, s in DOMAIN_ERRORS if s == status]
    return list(dict.fromkeys(found))


ERROR_STATUS_TEXT = {
    status: f"{text} ({', '.join(f'`{c}`' for c in codes_of(status))})." for status, text in STATUS_MEANING.items()
}


def envelope(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """The one error response shape."""
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status, headers=headers)


def domain_status(exc: Exception) -> tuple[int, str] | None:
    """``(status, code)`` for a known library or gallery error, else ``None``."""
    for cls, status in DOMAIN_ERRORS:
        if isinstance(exc, cls):
            return status, cls.code
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
    400: ServiceError.code,
    404: SubjectNotFound.code,
    405: "method_not_allowed",
    **{cls.status: cls.code for cls in SERVICE_ERRORS if cls.status != 503},
}
"""The code of an HTTP exception raised by FastAPI or Starlette themselves (unknown route, wrong method...)."""


def install(app: FastAPI) -> None:
    """Register the handlers that turn every failure into the envelope."""

    async def service_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ServiceError)
        return envelope(exc.status, exc.code, exc.message, exc.headers)

    async def domain_error(_: Request, exc: Exception) -> JSONResponse:
        mapped = domain_status(exc)
        if mapped is None:  # pragma: no cover - every registered class is mapped
            return await unexpected(_, exc)
        retry = {"Retry-After": "1"} if mapped[0] == 429 else None
        return envelope(mapped[0], mapped[1], error_message(exc), retry)

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
    for cls, _status in DOMAIN_ERRORS:
        app.add_exception_handler(cls, domain_error)
    app.add_exception_handler(FaceRecError, domain_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(Exception, unexpected)
