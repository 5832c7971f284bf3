"""``X-API-Key`` checks. Keys are required when the server is not on loopback or when any key exists.

A local user on a loopback address with no keys made yet may use every endpoint without one; the moment a key
is created (``facerec keys create``) every request needs one.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Request, Security
from fastapi.security import APIKeyHeader

from service.config import is_loopback
from service.errors import Forbidden, Unauthorized
from service.keys import ApiKey, Scope

api_key_header = APIKeyHeader(
    name="X-API-Key", auto_error=False, description="An API key from `facerec keys create`."
)

LOCAL_USER = ApiKey(
    id="local", name="local user (loopback, no keys)", scope="admin", created_at="", revoked_at=None
)


def keys_required(request: Request) -> bool:
    """Whether this app demands a key: always off loopback, and on loopback once any active key exists."""
    state = request.app.state
    return not is_loopback(state.settings.host) or state.keys.has_active()


def require(scope: Scope) -> Callable[..., Awaitable[ApiKey]]:
    """Admit keys allowed ``scope``: 401 for a missing, unknown or revoked key, 403 for a lacking scope."""

    async def check(
        request: Request, token: Annotated[str | None, Security(api_key_header)] = None
    ) -> ApiKey:
        if not keys_required(request):
            return LOCAL_USER
        if not token:
            raise Unauthorized("an X-API-Key header is required", headers={"WWW-Authenticate": "ApiKey"})
        key = request.app.state.keys.authenticate(token)
        if key is None:
            raise Unauthorized("the API key is unknown or revoked", headers={"WWW-Authenticate": "ApiKey"})
        if not key.allows(scope):
            raise Forbidden(f"this endpoint needs the {scope!r} scope; the key has {key.scope!r}")
        return key

    return check
