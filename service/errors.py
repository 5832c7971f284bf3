"""Map domain errors to HTTP: one envelope ``{"error": {"code", "message"}}`` for every failure.

Library errors (``embeddings.errors``), gallery errors and the service's own errors are mapped here and
nowhere else; FastAPI's validation errors and HTTP exceptions are wrapped in the same envelope; anything
unexpected becomes a 500 ``internal_error`` that carries no exception text.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from embeddings.errors import FaceRecError

log = logging.getLogger("facerec.service")


STATUS_OF_CODE: dict[str, int] = {
    "bad_request": 400,
    "unauthorized": 401,
    "forbidden": 403,
    "not_found": 404,
    "request_timeout": 408,
    "model_mismatch": 409,
    "payload_too_large": 413,
    "unsupported_media_type": 415,
    "validation_error": 422,
    "invalid_image": 422,
    "no_face": 422,
    "multiple_faces": 422,
    "pose": 422,
    "low_quality": 422,
    "overloaded": 429,
    "not_ready": 503,
    "gallery_locked": 503,
    "vector_index_unavailable": 503,
    "storage_unavailable": 503,
    "insufficient_storage": 507,
}
"""The HTTP status of each stable error code: of the service's own errors and of the library and gallery errors
(``FaceRecError.code``). A library or gallery error whose code is not here is unexpected: a 500. The order is the
order the codes are listed in the API docs (the first code of a status is the one of its plain HTTP errors)."""


class ServiceError(Exception):
    """An error the service raises on purpose, with its stable ``code`` and its HTTP ``status`` (by default the
    code's in :data:`STATUS_OF_CODE`)."""

    status = 400
    code = "bad_request"

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        if "status" not in cls.__dict__:
            cls.status = STATUS_OF_CODE[cls.code]

    def __init__(self, message: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.headers = headers


class UnsupportedMediaType(ServiceError):
    """The body is neither multipart/form-data nor JSON."""

    code = "unsupported_media_type"


class BadRequest(ServiceError):
    """A request the route itself finds invalid (beyond what its parameter models check)."""

    code = "validation_error"


class Unauthorized(ServiceError):
    """No API key, or one the key store does not know."""

    code = "unauthorized"


class Forbidden(ServiceError):
    """The key lacks the scope the endpoint needs."""

    code = "forbidden"


class Overloaded(ServiceError):
    """Too many requests already wait for the model; retry shortly."""

    code = "overloaded"


class NotReady(ServiceError):
    """The model is still loading, or the server is shutting down."""

    code = "not_ready"


STATUS_MEANING = {
    401: "Missing or unknown API key",
    403: "The key lacks the scope this endpoint needs",
    404: "Unknown subject or face",
    408: "The request body stalled: no part of it arrived for `FACEREC_BODY_IDLE_TIMEOUT_S`; nothing was stored",
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
    """The stable codes a response of ``status`` may carry."""
    return [code for code, s in STATUS_OF_CODE.items() if s == status]


ERROR_STATUS_TEXT = {
    status: f"{text} ({', '.join(f'`{c}`' for c in codes_of(status))})." for status, text in STATUS_MEANING.items()
}


MESSAGE_LIMIT = 500
"""Characters of a message shown in full; a longer one (an id or value echoed from a hostile request) is cut
there and says how long it was."""


def shown(message: str) -> str:
    """``message``, cut to :data:`MESSAGE_LIMIT` characters when longer."""
    if len(message) <= MESSAGE_LIMIT:
        return message
    return f"{message[:MESSAGE_LIMIT]}... (cut: {len(message)} characters)"


def envelope(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """The one error response shape."""
    body = {"error": {"code": code, "message": shown(message)}}
    return JSONResponse(body, status_code=status, headers=headers)


def domain_status(exc: Exception) -> tuple[int, str] | None:
    """``(status, code)`` for a library or gallery error whose code the API answers with, else ``None``."""
    if not isinstance(exc, FaceRecError) or exc.code not in STATUS_OF_CODE:
        return None
    return STATUS_OF_CODE[exc.code], exc.code


def error_message(exc: Exception) -> str:
    """A message safe to show a client: the library's own message for domain errors."""
    if isinstance(exc, FaceRecError | ServiceError):
        return exc.message
    return str(exc.args[0]) if exc.args else type(exc).__name__


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        loc = ".".join(str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path"))
        if err.get("type") == "nul_character":  # its message names the place itself
            parts.append(str(err.get("msg")))
        else:
            parts.append(f"{loc or 'request'}: {err.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


def _not_json_body(request: Request, exc: RequestValidationError) -> bool:
    """A JSON-body route's body failed because it was sent as something else (text/plain, a form, multipart):
    FastAPI then validates the raw bytes and reports a 422, where the contract says 415 (the image routes, which
    parse their own bodies and raise their own 415 and 422s, answer the same). Only routes whose body FastAPI
    parses (a ``body_field``: all of them take JSON) are concerned."""
    if getattr(request.scope.get("route"), "body_field", None) is None:
        return False
    if not any(tuple(err.get("loc", ()))[:1] == ("body",) for err in exc.errors()):
        return False
    content_type = request.headers.get("content-type")
    if not content_type:  # FastAPI reads a body without a content type as JSON
        return False
    mime = content_type.split(";", 1)[0].strip().lower()
    return not (mime == "application/json" or (mime.startswith("application/") and mime.endswith("+json")))


HTTP_CODES = {status: codes_of(status)[0] for status in (400, 401, 403, 404, 408, 413, 415, 422, 429)} | {
    405: "method_not_allowed"
}
"""The code of an HTTP exception raised by FastAPI or Starlette themselves (unknown route, wrong method...)."""


CLIENT_CLOSED_REQUEST = 499
"""The status recorded (metrics, access log) for a request whose client closed the connection before its body
ended (nginx's code): not a server error."""


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

    async def validation_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        if _not_json_body(request, exc):
            return envelope(415, "unsupported_media_type", "the body must be JSON (Content-Type: application/json)")
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

    async def client_gone(request: Request, _: Exception) -> Response:
        # the client closed the connection before its body ended (a dropped upload): nobody reads an answer, and it
        # is no server error (it was a 500 in the metrics and two tracebacks in the log)
        log.info("the client closed the connection during %s %s", request.method, request.url.path)
        return Response(status_code=CLIENT_CLOSED_REQUEST)

    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
        return envelope(500, "internal_error", "an unexpected error occurred; it has been logged")

    app.add_exception_handler(ServiceError, service_error)
    app.add_exception_handler(FaceRecError, domain_error)  # and its subclasses: Starlette looks along the MRO
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(ClientDisconnect, client_gone)
    app.add_exception_handler(Exception, unexpected)
