"""``facerec serve``: run the REST API and the web page with uvicorn."""

from __future__ import annotations

import copy
import signal
import sys
from pathlib import Path
from types import FrameType
from typing import Any

import typer


def _exit_on_sigterm(signum: int, frame: FrameType | None) -> None:
    """SIGTERM before uvicorn runs, or re-raised by uvicorn after its graceful shutdown: exit 0."""
    sys.exit(0)


def log_config() -> dict[str, Any]:
    """uvicorn's logging configuration, with the service's own loggers (``facerec.*``) on its console handler:
    their warnings and errors, and the one ``facerec.ready`` line, appear among uvicorn's."""
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config["loggers"]["facerec"] = {"handlers": ["default"], "level": "WARNING", "propagate": False}
    config["loggers"]["facerec.ready"] = {"level": "INFO"}
    return config


LOG_LEVELS = ("critical", "error", "warning", "info", "debug", "trace")
"""uvicorn's log levels."""


def serve(
    host: str = typer.Option(None, "--host", help="Address to listen on (default $FACEREC_HOST or 127.0.0.1)."),
    port: int = typer.Option(None, "--port", help="Port (default $FACEREC_PORT or 8000)."),
    data: Path = typer.Option(None, "--data", help="Data dir (default $FACEREC_DATA or ./data)."),
    log_level: str = typer.Option("info", "--log-level", help=f"uvicorn log level: {', '.join(LOG_LEVELS)}."),
) -> None:
    """Serve the API, /docs and the web page. Off loopback it refuses to start until an API key exists.

    SIGTERM (or Ctrl-C) is a graceful shutdown: no new connections, requests in flight finish (at most
    FACEREC_SHUTDOWN_TIMEOUT_S), the gallery saves its snapshot, and the process exits 0."""
    from embeddings.errors import FaceRecError
    from embeddings.models import resolve_model
    from service.lean_imports import block_optional_imports
    from service.memory import configure

    if log_level.lower() not in LOG_LEVELS:
        raise typer.BadParameter(f"must be one of {', '.join(LOG_LEVELS)}", param_hint="--log-level")
    log_level = log_level.lower()
    block_optional_imports()  # before TensorFlow/Keras load: matplotlib and scikit-learn stay out (~80 MiB)
    from service.commands.backend import load_settings, opened_stores

    settings = load_settings(host=host, port=port, data=data)
    try:  # an unknown, unusable or gate-rejected FACEREC_MODEL: refuse to start, saying why
        resolve_model(settings.model)
    except FaceRecError as exc:
        typer.echo(f"error: FACEREC_MODEL: {exc.message}", err=True)
        raise typer.Exit(2) from exc
    # before the worker threads exist: bounded malloc arenas, periodic trim
    trimmer = configure(
        arenas=settings.malloc_arenas, interval=settings.malloc_trim_s, mmap_kib=settings.malloc_mmap_threshold_kib
    )
    import uvicorn

    from service.app import KeysRequired, check_bind, create_app

    try:
        with opened_stores(settings) as backend:
            check_bind(settings, backend.keys)
    except KeysRequired as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    # uvicorn handles SIGTERM itself while it runs, then re-raises it to the handler found at start: this one.
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        uvicorn.run(
            create_app(settings),
            host=settings.host,
            port=settings.port,
            log_level=log_level,
            log_config=log_config(),
            timeout_graceful_shutdown=max(1, round(settings.shutdown_timeout_s)),
        )
    finally:
        trimmer.stop()
