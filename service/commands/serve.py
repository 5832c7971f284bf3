"""``facerec serve``: run the REST API and the web page with uvicorn."""

from __future__ import annotations

import copy
import errno
import os
import signal
import socket
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


def listen_problem(host: str, port: int) -> str | None:
    """Why uvicorn could not listen on ``host``:``port``, or None. Binds every address ``host`` resolves to as
    uvicorn does (asyncio's ``create_server``: SO_REUSEADDR on POSIX, IPv6 sockets v6-only, all held at once),
    then closes them: a socket that never listened leaves no TIME_WAIT behind. With SO_REUSEADDR, as uvicorn, a
    port whose old connections linger in TIME_WAIT passes, and one that another process listens on fails."""
    where = f"[{host}]:{port}" if ":" in host else f"{host or '*'}:{port}"
    try:
        infos = set(socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE))
    except (OSError, UnicodeError) as exc:  # socket.gaierror is an OSError
        return f"cannot listen on {where}: {host!r} does not resolve ({getattr(exc, 'strerror', None) or exc})"
    sockets: list[socket.socket] = []
    bound, unavailable = 0, None
    try:
        for family, kind, proto, _, address in infos:
            try:
                sock = socket.socket(family, kind, proto)
            except OSError:  # a family this machine lacks: asyncio skips it too
                continue
            sockets.append(sock)
            if os.name == "posix" and sys.platform != "cygwin":
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                sock.bind(address)
            except OSError as exc:
                reason = f"cannot listen on {where}: {(exc.strerror or str(exc)).lower()}"
                if exc.errno != errno.EADDRNOTAVAIL:
                    return reason
                unavailable = reason  # ::1 where IPv6 is off: newer asyncio skips the address, so no error yet
                continue
            bound += 1
    finally:
        for sock in sockets:
            sock.close()
    return unavailable if not bound else None


def serve(
    host: str = typer.Option(None, "--host", help="Address to listen on (default $FACEREC_HOST or 127.0.0.1)."),
    port: int = typer.Option(None, "--port", help="Port (default $FACEREC_PORT or 8000)."),
    data: Path = typer.Option(None, "--data", help="Data dir (default $FACEREC_DATA or ./data)."),
    log_level: str = typer.Option("info", "--log-level", help=f"uvicorn log level: {', '.join(LOG_LEVELS)}."),
) -> None:
    """Serve the API, /docs and the web page. Off loopback it refuses to start until an API key exists; an address
    it cannot listen on (a host that does not resolve, a port in use) is refused before the data dir or the model.

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
    problem = listen_problem(settings.host, settings.port)  # before the data dir, the keys and the model
    if problem:
        typer.echo(f"error: {problem}", err=True)
        raise typer.Exit(2)
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
