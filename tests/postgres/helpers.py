"""Shared helpers of the PostgreSQL tests."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx


@contextlib.asynccontextmanager
async def served(app: Any, *, timeout_s: float) -> AsyncIterator[httpx.AsyncClient]:
    """``app`` started (its lifespan) and a client of it from a loopback address, in this event loop."""
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 50000))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8000", timeout=timeout_s) as c,
    ):
        yield c
