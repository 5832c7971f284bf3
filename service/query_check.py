"""Unknown query parameters are refused, not ignored.

FastAPI ignores a query parameter a route does not declare, so ``GET /v1/subjects?limt=5`` answered the default
page and ``DELETE /v1/subjects/7?erase_photo_face=true`` erased without the photo faces, both with a 2xx. Every
``/v1`` route (:class:`service.auth.AdmitFirst`) instead answers such a request with a 422 ``validation_error``
naming the parameter and the ones the route takes, after the key is checked, and nothing runs.

A parameter the route takes, given twice (``?erase_photo_faces=true&erase_photo_faces=false``), is a 422 too:
FastAPI would silently take the last.

Routes that parse their own body (:func:`service.uploads.read_payload`: the image routes) refuse every query
parameter themselves, with the fields the endpoint takes; they are marked with :func:`reads_own_query`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from fastapi import Request
from fastapi.dependencies.models import Dependant
from fastapi.exceptions import RequestValidationError

F = TypeVar("F", bound=Callable[..., Any])

_OWN_QUERY = "facerec_reads_own_query"


def reads_own_query(endpoint: F) -> F:
    """Mark ``endpoint`` as one that refuses query parameters itself (through its payload), so that the route's
    generic check leaves them to it."""
    setattr(endpoint, _OWN_QUERY, True)
    return endpoint


def checks_query(endpoint: Callable[..., Any]) -> bool:
    """Whether the route of ``endpoint`` should refuse unknown query parameters (not marked :func:`reads_own_query`)."""
    return not getattr(endpoint, _OWN_QUERY, False)


def query_names(dependant: Dependant) -> tuple[str, ...]:
    """The query parameters a route declares, its dependencies' included, in declaration order (aliases)."""
    names = [field.alias for field in dependant.query_params]
    for sub in dependant.dependencies:
        names += query_names(sub)
    return tuple(dict.fromkeys(names))


def query_problems(request: Request, known: tuple[str, ...]) -> list[tuple[str, str]]:
    """``(name, problem)`` for each query parameter the route does not take (``unknown``) and each it takes that
    is given more than once (``repeated``: every parameter is one value, and which one would win is not what a
    client means), each name once, in the order sent."""
    names = [name for name, _ in request.query_params.multi_items()]
    out: dict[str, str] = {}
    for name in names:
        if name not in known:
            out.setdefault(name, "unknown")
        elif names.count(name) > 1:
            out.setdefault(name, "repeated")
    return list(out.items())


def refusal(problems: list[tuple[str, str]], known: tuple[str, ...]) -> RequestValidationError:
    """The 422 for the ``problems`` (:func:`query_problems`) of a route that takes ``known``."""
    takes = "takes " + ", ".join(f"`{n}`" for n in known) if known else "takes no query parameters"
    said = {
        "unknown": f"unknown query parameter; this endpoint {takes}",
        "repeated": "given more than once; give each query parameter once",
    }
    return RequestValidationError(
        [
            {"loc": ("query", name or "(empty name)"), "msg": said[why], "type": "extra_forbidden"}
            for name, why in problems
        ]
    )
