"""Building the service's parts from :class:`Settings`: the analyzer, its micro-batcher, and the backend (the
gallery, the API key store and the audit log). The app, ``facerec reindex`` and the CLI all start here; this is
the one module that knows which implementations exist.

Backends. Without ``FACEREC_DATABASE_URL`` everything lives in the data dir: the embedded gallery (SQLite +
FAISS, one process holds it: a second gets :class:`GalleryLocked`), ``keys.db`` and ``audit.log``. With it,
:func:`service.pgstores.open_postgres_backend` (pgvector search) or :func:`service.milvus_backend.open_milvus_backend`
(Milvus search) provides all three on PostgreSQL (any number of replicas), the rate limit the replicas share,
and the events, video jobs, streams and photo library (:class:`MediaStores`; embedded: SQLite files in the data
dir). Callers get :class:`Backend`, typed against the protocols (:class:`Gallery`, :class:`ApiKeyStore`,
:class:`AuditStore`), and never check which one they have.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import numpy.typing as npt

from embeddings import FaceAnalyzer
from embeddings.errors import FaceRecError
from embeddings.models import resolve_model
from service.audit import AuditLog
from service.batching import BatchingEncoder, MicroBatcher
from service.config import DATA_DIR_MODE, Settings
from service.events.store import EventStore, SQLiteEventStore
from service.gallery import (
    Gallery,
    GalleryLocked,
    GallerySettings,
    IndexParams,
    ReindexRefused,
    SideStaging,
    StorageUnavailable,
    open_gallery,
)
from service.gallery.sqlite import DB_NAME
from service.keys import KeyStore
from service.metrics import Metrics
from service.pixel_budget import PixelBudget
from service.ratelimit import RateLimiter
from service.runner import Runner
from service.sqlite_file import usable
from service.stores import ApiKeyStore, AuditStore, MediaStores
from service.video.jobstore import JobStore, SQLiteJobStore

log = logging.getLogger("facerec.service")

GalleryFactory = Callable[[Path], Gallery]
"""``factory(data_dir)`` -> the embedded gallery (tests pass one to get another configuration)."""

REINDEX_LOCK = "REINDEX.lock"


class BackendUnavailable(FaceRecError):
    """The configured backend cannot be used by this installation (not installed, not implemented yet)."""

    code = "backend_unavailable"


# ---------------------------------------------------------------------------------------------- the model
def default_analyzer(settings: Settings) -> FaceAnalyzer:
    """The real analyzer of ``FACEREC_MODEL`` with the settings' quality minimums and threshold, warmed up."""
    info = resolve_model(settings.model)
    analyzer = FaceAnalyzer(
        settings.analyzer_config(),
        weights_path=info.weights_path,
        model_id=info.model_id,
        threshold=settings.match_threshold,
    )
    analyzer.warm_up()
    return analyzer


def start_batcher(analyzer: FaceAnalyzer, settings: Settings, metrics: Metrics) -> MicroBatcher:
    """A micro-batcher in front of the analyzer's encoder, handed to the analyzer as its encoder."""
    encoder = analyzer.encoder
    batcher = MicroBatcher(
        encoder.encode,
        max_batch=settings.batch_max_size,
        max_wait_ms=settings.batch_max_wait_ms,
        max_queue=settings.batch_max_queue,
        on_batch=metrics.observe_batch,
    )
    metrics.batch_queue.set_function(lambda: batcher.queued_faces)
    analyzer.encoder = BatchingEncoder(encoder, batcher)
    return batcher


def make_runner(settings: Settings, batcher: MicroBatcher | None) -> Runner:
    """The runner of model calls, with its limits: ``FACEREC_INFERENCE_THREADS`` at once, plus (with a
    batcher) a full batch more, since requests waiting for the encoder use no CPU; the batcher tracks them; the
    decoded pixels they hold at once, ``FACEREC_DECODE_BUDGET_MP``."""
    budget = PixelBudget(round(settings.decode_budget_mp * 1e6)) if settings.decode_budget_mp > 0 else None
    if batcher is None:
        return Runner(threads=settings.inference_threads, max_pending=settings.max_pending, budget=budget)
    return Runner(
        threads=settings.inference_threads + settings.batch_max_size,
        max_pending=settings.max_pending,
        tracker=batcher.producer,
        budget=budget,
    )


# ---------------------------------------------------------------------------------------------- the stores
def default_gallery(settings: Settings) -> Gallery:
    """The embedded gallery of ``settings.data`` with the settings' tunables (:class:`GalleryLocked` if held)."""
    tunables = GallerySettings(
        index=IndexParams(
            hnsw_storage=settings.hnsw_storage,
            sq8_from=settings.hnsw_sq8_from,
            ef_search=settings.hnsw_ef_search,
        ),
        snapshot_every_changes=settings.snapshot_every_changes,
        snapshot_interval_s=settings.snapshot_interval_s,
    )
    return open_gallery(settings.data, tunables)


@dataclass
class Backend:
    """The stores of one configuration. ``gallery`` is None until :meth:`open_gallery` for the embedded backend
    opened with ``gallery=False`` (so that the key store can be read without taking the data dir)."""

    keys: ApiKeyStore
    audit: AuditStore
    gallery: Gallery | None = None
    ratelimit: RateLimiter | None = None
    """A rate limiter shared by every replica of this backend (the database's); None: the app's own in memory."""
    media: MediaStores | None = None
    """Events, video jobs, streams and the photo library shared by the replicas (the database's); None: the
    embedded SQLite files of the data dir."""
    _open: Callable[[], Gallery] | None = field(default=None, repr=False)

    def open_gallery(self) -> Gallery:
        """The gallery, opened now if it is not yet (embedded: takes the data dir, or :class:`GalleryLocked`;
        :class:`StorageUnavailable` when its files cannot be opened)."""
        if self.gallery is None:
            assert self._open is not None
            self.gallery = self._open()
        return self.gallery

    def close(self) -> None:
        """Close the gallery (saving its snapshot), then the key store even if that failed. (The audit log holds
        nothing open: the embedded one fsyncs and closes per record, a database one shares the gallery's pool.)"""
        gallery, self.gallery = self.gallery, None
        try:
            if gallery is not None:
                gallery.close()
        finally:
            self.keys.close()


def open_backend(settings: Settings, *, gallery: bool = True, gallery_factory: GalleryFactory | None = None) -> Backend:
    """The gallery, key store and audit log ``settings`` select (see the module doc). ``gallery=False`` leaves
    the embedded gallery closed (:meth:`Backend.open_gallery` opens it); a database backend is always opened
    whole. ``gallery_factory`` replaces the embedded gallery (tests)."""
    if settings.database_url:
        return _open_database(settings)
    if settings.data.exists() and not settings.data.is_dir():
        raise StorageUnavailable(f"the data dir {settings.data} is not a directory")
    with usable(f"the data dir {settings.data}"):
        settings.data.mkdir(mode=DATA_DIR_MODE, parents=True, exist_ok=True)
    keys = KeyStore(settings.data)  # StorageUnavailable when keys.db cannot be opened
    factory = gallery_factory or (lambda _: default_gallery(settings))

    def open_embedded() -> Gallery:
        with usable(f"the gallery {settings.data / DB_NAME}"):
            return factory(settings.data)

    backend = Backend(keys, AuditLog(settings.data), _open=open_embedded)
    if gallery:
        try:
            backend.open_gallery()
        except BaseException:
            backend.close()
            raise
    return backend


def _open_database(settings: Settings) -> Backend:
    engine = settings.vector_engine
    try:
        from service.pgstores import open_postgres_backend

        if engine == "milvus":
            from service.milvus_backend import open_milvus_backend
    except ImportError as exc:
        raise BackendUnavailable(
            f"the PostgreSQL backend is not installed ({exc}); FACEREC_DATABASE_URL={settings.database_display} "
            f"with {engine} search needs it. Unset FACEREC_DATABASE_URL to use the embedded gallery"
        ) from exc
    pg = open_milvus_backend(settings) if engine == "milvus" else open_postgres_backend(settings)
    log.info("backend: PostgreSQL %s with %s search", pg.location, engine)
    limiter = pg.rate_limiter(per_minute=settings.rate_limit_per_minute, burst=settings.rate_limit_burst)
    return Backend(pg.keys, pg.audit, pg.gallery, ratelimit=limiter, media=pg.media_stores(settings.data))


def event_store(settings: Settings, backend: Backend) -> EventStore:
    """The events of this configuration: the database's (shared), or ``<data>/events.db``; close it after use."""
    return backend.media.events if backend.media is not None else SQLiteEventStore(settings.data)


def job_store(settings: Settings, backend: Backend) -> JobStore:
    """The video jobs of this configuration: the database's (shared), or ``<data>/videos.db``; close it after use."""
    return backend.media.jobs if backend.media is not None else SQLiteJobStore(settings.data)


# ---------------------------------------------------------------------------------------------- re-indexing
class ReindexStaging(Protocol):
    """What a re-index embeds through: the staging methods of :class:`Gallery`."""

    def reindex_counts(self, model_id: str) -> dict[str, int]: ...
    def crops_to_embed(self, model_id: str, after_id: int, limit: int) -> list[tuple[int, bytes]]: ...
    def stage_embeddings(self, model_id: str, face_ids: Sequence[int], embeddings: npt.NDArray[np.float32]) -> int: ...


@dataclass
class ReindexTarget:
    """What ``facerec reindex`` works on. ``gallery`` is None when a server holds the embedded data dir: then
    ``staging`` is a second connection that only stages, and the server switches at its next start."""

    staging: ReindexStaging
    gallery: Gallery | None
    audit: AuditStore


@contextlib.contextmanager
def open_reindex_target(settings: Settings) -> Iterator[ReindexTarget]:
    """The gallery (or its staging side door) and audit log a re-index of ``settings`` uses, closed on exit.
    :class:`ReindexRefused` when there is no embedded gallery or another re-index runs on the data dir."""
    if settings.database_url:
        backend = open_backend(settings)
        try:
            gallery = backend.open_gallery()
            yield ReindexTarget(gallery, gallery, backend.audit)
        finally:
            backend.close()
        return
    data = Path(settings.data)
    if not (data / DB_NAME).is_file():
        raise ReindexRefused(f"no gallery in {data} (no {DB_NAME})")
    with _reindex_lock(data):
        try:
            backend = open_backend(settings)
        except GalleryLocked:  # a server holds the data dir: stage through our own connection
            side = SideStaging(data)
            try:
                yield ReindexTarget(side, None, AuditLog(data))
            finally:
                side.close()
            return
        try:
            gallery = backend.open_gallery()
            yield ReindexTarget(gallery, gallery, backend.audit)
        finally:
            backend.close()


@contextlib.contextmanager
def _reindex_lock(data_dir: Path) -> Iterator[None]:
    """One re-index at a time per data dir (``<data>/REINDEX.lock``)."""
    fd = os.open(data_dir / REINDEX_LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ReindexRefused(f"another `facerec reindex` is running on {data_dir}") from None
        yield
    finally:
        os.close(fd)
