"""``X-API-Key`` checks, decided per request.

With no active key, a request may go without one only when it is plainly local: the server socket it
arrived on is a loopback address, its peer is a loopback address, and it carries no proxy header
(``X-Forwarded-For``, ``Forwarded``, ``X-Real-IP``: a reverse proxy on loopback must not make remote users
local). The moment a key is created (``facerec keys create``) every request needs one. A key that is revoked or
has expired is not active: once every key is, the server is back where it was before the first key (as after
revoking every key: plainly local requests need none, all others are refused). The decision uses the real
addresses of the connection, not ``FACEREC_HOST``, so ``uvicorn --host 0.0.0.0`` cannot open the API.

An expired key is a 401 that says so, limited per client IP like an unknown key. Each admitted key's use is
noted for ``last_used_at`` (:mod:`service.key_usage`: no write on the request's path).

The same check applies the rate limit (``service.ratelimit``): per key id once the key is known, per client
IP for the key-less local user and for requests whose key is missing or wrong (so guessing keys is limited
too).

FastAPI reads and parses a route's declared body (JSON) before any dependency runs, so routes with one use
:class:`AdmitFirst`: the key is checked before the body is read, and a request without a good key gets its
401/403/429 whatever its body (not a 422 for broken JSON, unlimited, to anyone). The same route class refuses
query parameters a route does not take, after the key (:mod:`service.query_check`).

Each check reads the key store and the rate limiter, which may be a database: it runs in a worker thread, so
a database that is slow or away (each call then waits up to ``FACEREC_DB_TIMEOUT_S`` before its 503) holds
only that request, never the event loop and every other request with it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine
from typing import Annotated, Any

from fastapi import Request, Response, Security
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from fastapi.security import APIKeyHeader
from starlette.concurrency import run_in_threadpool

from service.addresses import is_loopback
from service.errors import Forbidden, Unauthorized
from service.key_usage import LastUsed
from service.keys import ApiKey, Scope
from service.query_check import checks_query, query_names, query_problems, refusal
from service.stores import ApiKeyStore

api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="An API key from `facerec keys create`.")

LOCAL_USER = ApiKey(id="local", name="local user (loopback, no keys)", scope="admin", created_at="", revoked_at=None)


PROXY_HEADERS = ("x-forwarded-for", "forwarded", "x-real-ip")


def is_local_request(request: Request) -> bool:
    """Both ends of the connection on loopback and no sign of a proxy in between."""
    server = request.scope.get("server")
    client = request.client
    if not server or not server[0] or client is None or not client.host:
        return False
    if not (is_loopback(str(server[0])) and is_loopback(client.host)):
        return False
    return not any(name in request.headers for name in PROXY_HEADERS)


def keys_required(request: Request) -> bool:
    """Whether this request needs a key: always once any active key exists, else unless it is local."""
    keys: ApiKeyStore = request.app.state.keys
    return keys.has_active() or not is_local_request(request)


def _limit(request: Request, caller: str) -> None:
    limiter = getattr(request.app.state, "ratelimit", None)
    if limiter is not None:
        limiter.check(caller)


def _client_ip(request: Request) -> str:
    return f"ip:{request.client.host if request.client else 'unknown'}"


def admit(request: Request, token: str | None, scope: Scope) -> ApiKey:
    """The key admitted for ``scope`` (blocking: it reads the key store and the rate limiter); raises 401/403/429."""
    if not keys_required(request):
        _limit(request, _client_ip(request))
        return LOCAL_USER
    if not token:
        _limit(request, _client_ip(request))
        raise Unauthorized("an X-API-Key header is required", headers={"WWW-Authenticate": "ApiKey"})
    keys: ApiKeyStore = request.app.state.keys
    key = keys.authenticate(token)
    if key is None or key.expired:
        _limit(request, _client_ip(request))
        why = "is unknown or revoked" if key is None else f"expired at {key.expires_at}"
        raise Unauthorized(f"the API key {why}", headers={"WWW-Authenticate": "ApiKey"})
    usage: LastUsed | None = getattr(request.app.state, "key_usage", None)
    if usage is not None:
        usage.used(key.id)
    _limit(request, f"key:{key.id}")
    if not key.allows(scope):
        raise Forbidden(f"this endpoint needs the {scope!r} scope; the key has {key.scope!r}")
    return key


ADMITTED = "facerec.admitted_key"
"""The ASGI scope entry where :class:`AdmitFirst` leaves the key it admitted, for :class:`Require` to return."""


class Require:
    """The dependency admitting keys allowed ``scope``: 401 for a missing, unknown, revoked or expired key, 403 for a
    lacking scope (checked in a worker thread, see the module doc); the key :class:`AdmitFirst` admitted, if any."""

    def __init__(self, scope: Scope) -> None:
        self.scope: Scope = scope

    async def __call__(self, request: Request, token: Annotated[str | None, Security(api_key_header)] = None) -> ApiKey:
        admitted: ApiKey | None = request.scope.get(ADMITTED)
        if admitted is not None:
            return admitted
        return await run_in_threadpool(admit, request, token, self.scope)


def require(scope: Scope) -> Callable[..., Awaitable[ApiKey]]:
    """The dependency of routes that need ``scope`` (:class:`Require`)."""
    return Require(scope)


def required_scope(dependant: Dependant) -> Scope | None:
    """The scope a route's :class:`Require` dependency (direct or nested) asks for, or None."""
    for dep in dependant.dependencies:
        scope = dep.call.scope if isinstance(dep.call, Require) else required_scope(dep)
        if scope is not None:
            return scope
    return None


class AdmitFirst(APIRoute):
    """The route class of every ``/v1`` router. A route with a declared body and a key checks the key before
    FastAPI reads the body; a request with a query parameter the route does not take is a 422 after the key is
    checked (:mod:`service.query_check`); anything else runs as usual."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        scope = required_scope(self.dependant)
        known = query_names(self.dependant)
        check_query = checks_query(self.endpoint)
        admit_first = scope is not None and self.body_field is not None
        if not admit_first and not check_query:
            return handler

        async def admitted_first(request: Request) -> Response:
            unknown = query_problems(request, known) if check_query else []
            if scope is not None and (admit_first or unknown):
                token = request.headers.get(api_key_header.model.name)
                request.scope[ADMITTED] = await run_in_threadpool(admit, request, token, scope)
            if unknown:
                raise refusal(unknown, known)
            return await handler(request)

        return admitted_first
