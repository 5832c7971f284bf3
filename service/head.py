"""``HEAD`` on every ``GET`` route: the answer the GET would get (status, headers, auth and rate limit
included) without its body.

FastAPI's routes answer only the methods they declare, so ``HEAD /healthz`` was a 405 where load balancers,
uptime checkers and ``curl -I`` expect a 200. :class:`HeadMiddleware` runs a HEAD that no route takes itself
(the static files and ``/openapi.json`` do) as a GET and sends the response's start with an empty body. The
routes stay GET only, so the OpenAPI document gains no HEAD operations; a path without a GET route answers
HEAD as it answers GET: 405 (with its ``Allow``) or 404.
"""

from __future__ import annotations

from starlette.routing import Match, Router
from starlette.types import ASGIApp, Message, Receive, Scope, Send

AS_HEAD = "facerec.head"
"""The scope entry that tells a GET route it runs for a HEAD (:func:`for_head`)."""

BODY_MESSAGES = frozenset({"http.response.body", "http.response.pathsend", "http.response.zerocopysend"})
"""The ASGI messages that carry (or send) the response body."""


class HeadMiddleware:
    """Answer ``HEAD`` like ``GET`` minus the body, for the routes of ``router`` that do not take HEAD."""

    def __init__(self, app: ASGIApp, router: Router) -> None:
        self.app = app
        self.router = router

    def _taken(self, scope: Scope) -> bool:
        """Whether a route takes this HEAD itself (a Starlette route or a mount such as the static files)."""
        return any(route.matches(scope)[0] is Match.FULL for route in self.router.routes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD" or self._taken(scope):
            await self.app(scope, receive, send)
            return
        # a copy: the server keeps reading its own scope, where the method stays HEAD
        as_get = {**scope, "method": "GET", AS_HEAD: True}
        done = False

        async def without_body(message: Message) -> None:
            nonlocal done
            if message["type"] not in BODY_MESSAGES:
                await send(message)
            elif not done and not (message["type"] == "http.response.body" and message.get("more_body", False)):
                done = True
                await send({"type": "http.response.body", "body": b"", "more_body": False})

        try:
            await self.app(as_get, receive, without_body)
        finally:  # what the router left in the scope (the matched route, which the metrics read)
            scope.update((k, v) for k, v in as_get.items() if k != "method")


def for_head(scope: Scope) -> bool:
    """Whether this GET runs for a HEAD: a route whose GET does something beyond answering (an audited export)
    answers the headers only, without doing it."""
    return bool(scope.get(AS_HEAD))
