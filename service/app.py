"""``create_app(settings)``: the FastAPI application.

The lifespan opens the backend (:func:`service.bootstrap.open_backend`: key store, audit log, gallery), then
loads and warms the FaceAnalyzer once in a worker thread while the server already answers ``/healthz``
(``/readyz`` is 503 until both are ready); shutdown closes the backend (closing the gallery saves its index
snapshot if anything changed). With ``FACEREC_BATCH_MAX_SIZE`` > 0 the analyzer's encode step goes through a
:class:`MicroBatcher` (one encoder thread shared by all requests), which shutdown drains and joins before the
gallery closes. ``facerec serve`` gives uvicorn a bounded graceful shutdown, so on SIGTERM the server stops
accepting connections, lets the requests in flight finish (up to ``FACEREC_SHUTDOWN_TIMEOUT_S``), then runs
this shutdown.

CORS is off unless ``FACEREC_CORS_ORIGINS`` names origins; then exactly those are allowed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import anyio
import anyio.to_thread
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from embeddings import FaceAnalyzer
from service import errors
from service.addresses import is_loopback
from service.bootstrap import GalleryFactory, default_analyzer, make_runner, open_backend, start_batcher
from service.config import Settings
from service.gallery import Gallery, GalleryLocked
from service.head import HeadMiddleware
from service.key_usage import LastUsed
from service.media import Media
from service.metrics import Metrics, MetricsMiddleware
from service.nul_guard import NulUrlMiddleware
from service.photos.service import close_library, open_library
from service.ratelimit import RateLimiter
from service.reindex import finish_pending
from service.routes import apidocs, events, faces, health, live, photos, recognition, streams, subjects, videos, web
from service.security_headers import SecurityHeadersMiddleware
from service.settings_env import env_settings
from service.stores import ApiKeyStore
from service.uploads import BodyLimitMiddleware

log = logging.getLogger("facerec.service")

AnalyzerFactory = Callable[[Settings], FaceAnalyzer]

DESCRIPTION = """Self-hosted face recognition: MTCNN detection, FaceNet 128-d embeddings, a FAISS gallery.

Distances are L2 between unit embeddings, in [0, 2] (0 = identical); `similarity = 1 - distance**2 / 2`;
a threshold is an L2 distance and `distance <= threshold` means the same person. Boxes are
`{x, y, width, height}` in pixels of the upright image. Every error is `{"error": {"code", "message"}}`.

Send images as `multipart/form-data` files (`image`, `image_a`, `image_b`, `images`) or as JSON with the
same names plus `_base64` (`{"image_base64": "..."}`). Authenticate with the `X-API-Key` header.
"""


class KeysRequired(RuntimeError):
    """Refusing to listen on a non-loopback address with no API key."""


def check_bind(settings: Settings, keys: ApiKeyStore) -> None:
    """Raise :class:`KeysRequired` when the server would listen beyond loopback without any active key."""
    if not is_loopback(settings.host) and not keys.has_active():
        raise KeysRequired(
            f"refusing to listen on {settings.host}: no active API key exists (none yet, or every "
            f"one revoked or expired). Create one with "
            f"`facerec keys create --scope admin` (data dir {settings.data}) or listen on 127.0.0.1."
        )


def ready_line(settings: Settings, analyzer: FaceAnalyzer, gallery: Gallery, keys: ApiKeyStore) -> str:
    """The one line ``facerec serve`` prints when it is ready: URL, model and encoder precision, gallery size
    (faces of the model), and whether requests need an API key."""
    precision = getattr(getattr(analyzer, "encoder", None), "precision", "?")
    required = not is_loopback(settings.host) or keys.has_active()
    return (
        f"facerec ready on http://{settings.host}:{settings.port} - model {analyzer.model_id} ({precision}), "
        f"gallery {gallery.subject_count()} subjects / {gallery.face_count(analyzer.model_id)} faces, "
        f"API keys {'required' if required else 'not required (loopback, no key yet)'}"
    )


def create_app(
    settings: Settings | None = None,
    *,
    analyzer_factory: AnalyzerFactory = default_analyzer,
    gallery_factory: GalleryFactory | None = None,
) -> FastAPI:
    """Build the app. The factories let fast unit tests swap in fakes (``gallery_factory(data_dir)`` replaces the
    embedded gallery); production uses the backend the settings select (:func:`service.bootstrap.open_backend`)."""
    settings = settings or env_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state = app.state
        state.model_loaded = asyncio.Event()
        # keys first: refusing to listen off loopback without a key must not wait for the gallery to load
        backend = await anyio.to_thread.run_sync(
            lambda: open_backend(settings, gallery=False, gallery_factory=gallery_factory)
        )
        state.keys, state.audit = backend.keys, backend.audit
        state.key_usage = LastUsed(backend.keys)
        if backend.ratelimit is not None:  # shared by the replicas (PostgreSQL): one bucket per caller for all
            state.ratelimit = backend.ratelimit
        try:
            check_bind(settings, backend.keys)
            state.gallery = await anyio.to_thread.run_sync(backend.open_gallery)
            shared = backend.media
            state.photos = await anyio.to_thread.run_sync(open_library, settings, shared.photos if shared else None)
            state.photo_store = shared.photos if shared else None  # the database's, even with the library off
        except BaseException as exc:
            if isinstance(exc, GalleryLocked):
                log.error("the data dir %s is in use by another facerec process; not starting", settings.data)
            backend.close()
            raise
        # video jobs, live streams, events and webhooks (they wait for the model while it loads)
        state.media = Media(
            settings,
            analyzer=lambda: state.analyzer,
            gallery=lambda: state.gallery,
            metrics=app.state.metrics,
            stores=backend.media,
        ).start()
        batching = settings.batch_max_size > 0
        state.batcher = None

        async def load() -> None:
            try:
                analyzer = await anyio.to_thread.run_sync(analyzer_factory, settings)
                # a re-index staged while the previous server ran: switch before reporting ready
                await anyio.to_thread.run_sync(finish_pending, state.gallery, analyzer, state.audit)
                prepare = getattr(state.gallery, "prepare_search", None)  # Milvus: its collection loaded
                if prepare is not None:
                    await anyio.to_thread.run_sync(prepare, analyzer.model_id)
                if batching and isinstance(analyzer, FaceAnalyzer):
                    state.batcher = start_batcher(analyzer, settings, app.state.metrics)
                state.runner = make_runner(settings, state.batcher)
                app.state.metrics.watch_budget(state.runner.budget)
                detector = getattr(analyzer, "detector", None)
                app.state.metrics.watch_detector(getattr(detector, "call_batcher", None))
                state.analyzer = analyzer
                line = await anyio.to_thread.run_sync(ready_line, settings, analyzer, state.gallery, state.keys)
                logging.getLogger("facerec.ready").info("%s", line)
            except Exception as exc:
                log.exception("the model failed to load")
                state.load_error = f"the model failed to load: {type(exc).__name__}"
            finally:
                state.model_loaded.set()

        task = asyncio.create_task(load())
        try:
            yield
        finally:
            task.cancel()
            try:
                await anyio.to_thread.run_sync(state.media.close)
                batcher, state.batcher = state.batcher, None
                if batcher is not None:
                    await anyio.to_thread.run_sync(batcher.close, settings.shutdown_timeout_s)
                await anyio.to_thread.run_sync(close_library, state.photos)
            finally:  # whatever failed above, the gallery still saves its snapshot
                state.photos = None
                state.gallery = None
                await anyio.to_thread.run_sync(state.key_usage.close)
                await anyio.to_thread.run_sync(backend.close)

    app = FastAPI(
        title="facerec",
        version="0.1.0",
        summary="Face detection, verification and identification with a durable gallery.",
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,  # /docs is the one docs UI, served from the package (ReDoc would load a CDN script)
        redirect_slashes=False,  # no 307 to a Location made from the Host header (and scheme) of the request
    )
    app.state.settings = settings
    app.state.analyzer = None
    app.state.gallery = None
    app.state.photos = None
    app.state.photo_store = None
    app.state.load_error = None
    app.state.runner = None
    app.state.metrics = Metrics()
    app.state.audit = None  # the backend's, from the lifespan on
    app.state.key_usage = None  # the last-used recorder of the backend's keys, from the lifespan on
    app.state.ratelimit = RateLimiter(per_minute=settings.rate_limit_per_minute, burst=settings.rate_limit_burst)
    errors.install(app)
    for module in (health, subjects, faces, recognition, photos, videos, streams, events, live, web):
        app.include_router(module.router)
    app.mount("/static", web.static_files(), name="static")
    apidocs.install(app)
    video_limit = (settings.video_max_upload_bytes, "FACEREC_VIDEO_MAX_UPLOAD_BYTES")
    app.add_middleware(HeadMiddleware, router=app.router)  # innermost: HEAD meets auth and limits as a GET
    app.add_middleware(
        BodyLimitMiddleware,
        max_bytes=settings.max_upload_bytes,
        limits={"/v1/videos": video_limit},
        idle_s=settings.body_idle_timeout_s,
    )
    app.add_middleware(NulUrlMiddleware)
    app.add_middleware(SecurityHeadersMiddleware)
    app.add_middleware(MetricsMiddleware, metrics=app.state.metrics)
    if settings.cors_origin_list:  # outermost, so preflights are answered before anything else
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origin_list,
            allow_methods=["GET", "POST", "PATCH", "DELETE"],
            allow_headers=["X-API-Key", "Content-Type"],
            expose_headers=["Retry-After"],
            max_age=600,
        )
    return app
