"""Dependency aliases used by the routes: settings, the loaded analyzer, the gallery, the runner, API keys.

Every dependency is ``async def``, even the plain attribute reads: FastAPI runs a sync dependency in its thread
pool, and those thread hops cost each request more CPU than the reads themselves."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

import anyio
from fastapi import Depends, Request
from starlette.concurrency import run_in_threadpool

from embeddings import FaceAnalyzer
from service.audit import Action, actor_of
from service.auth import require
from service.config import Settings
from service.errors import NotReady
from service.gallery import Gallery
from service.keys import ApiKey
from service.metrics import Metrics
from service.runner import Runner
from service.stores import AuditStore

T = TypeVar("T")


async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_gallery(request: Request) -> Gallery:
    gallery: Gallery | None = request.app.state.gallery
    if gallery is None:
        raise NotReady("the gallery is not open", headers={"Retry-After": "5"})
    return gallery


async def get_analyzer(request: Request) -> FaceAnalyzer:
    """The loaded analyzer; waits up to ``ready_timeout_s`` while it loads, then 503 ``not_ready``."""
    state = request.app.state
    if state.analyzer is None and state.load_error is None:
        with anyio.move_on_after(state.settings.ready_timeout_s):
            await state.model_loaded.wait()
    if state.analyzer is None:
        reason = state.load_error or "the model is still loading"
        raise NotReady(reason, headers={"Retry-After": "5"})
    analyzer: FaceAnalyzer = state.analyzer
    return analyzer


async def get_runner(request: Request, _: Annotated[FaceAnalyzer, Depends(get_analyzer)]) -> Runner:
    """The runner of model calls. It is built with the analyzer, so it waits for the model as
    :func:`get_analyzer` does (503 ``not_ready`` while it loads)."""
    runner: Runner = request.app.state.runner
    return runner


async def get_metrics(request: Request) -> Metrics:
    metrics: Metrics = request.app.state.metrics
    return metrics


@dataclass(frozen=True)
class Model:
    """The loaded analyzer, the runner that admits work to it and the metrics that count its calls."""

    analyzer: FaceAnalyzer
    runner: Runner
    metrics: Metrics

    async def call(self, operation: str, faces: Callable[[T], int], fn: Callable[..., T], /, **kwargs: Any) -> T:
        """``fn(analyzer=..., **kwargs)`` on the runner; its seconds and ``faces(result)`` are observed under
        ``operation`` in the metrics."""
        result, seconds = await self.runner.run(fn, analyzer=self.analyzer, **kwargs)
        self.metrics.observe_call(operation, seconds, faces(result))
        return result


async def get_model(
    analyzer: Annotated[FaceAnalyzer, Depends(get_analyzer)],
    runner: Annotated[Runner, Depends(get_runner)],
    metrics: Annotated[Metrics, Depends(get_metrics)],
) -> Model:
    return Model(analyzer, runner, metrics)


async def get_audit(request: Request) -> AuditStore:
    audit: AuditStore = request.app.state.audit
    return audit


SettingsDep = Annotated[Settings, Depends(get_settings)]
GalleryDep = Annotated[Gallery, Depends(get_gallery)]
AnalyzerDep = Annotated[FaceAnalyzer, Depends(get_analyzer)]
RunnerDep = Annotated[Runner, Depends(get_runner)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
ModelDep = Annotated[Model, Depends(get_model)]
AuditDep = Annotated[AuditStore, Depends(get_audit)]
AdminKey = Annotated[ApiKey, Depends(require("admin"))]
RecognizeKey = Annotated[ApiKey, Depends(require("recognize"))]


async def audit_change(
    audit: AuditStore, action: Action, key: ApiKey | None, target: dict[str, Any], count: int | None = None
) -> None:
    """Record a change made through the API (by ``key``; None: the local user) in the audit log; the record is
    fsynced in a worker thread before the route answers."""
    await run_in_threadpool(lambda: audit.record(action, actor=actor_of(key), target=target, count=count))
