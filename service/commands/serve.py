"""``facerec serve``: run the REST API and the web page with uvicorn."""

from __future__ import annotations

from pathlib import Path

import typer

from service.config import Settings


def serve(
    host: str = typer.Option(None, "--host", help="Address to listen on (default $FACEREC_HOST or 127.0.0.1)."),
    port: int = typer.Option(None, "--port", help="Port (default $FACEREC_PORT or 8000)."),
    data: Path = typer.Option(None, "--data", help="Data dir (default $FACEREC_DATA or ./data)."),
    log_level: str = typer.Option("info", "--log-level", help="uvicorn log level."),
) -> None:
    """Serve the API, /docs and the web page. Off loopback it refuses to start until an API key exists."""
    import uvicorn

    from service.app import KeysRequired, check_bind, create_app
    from service.keys import KeyStore

    overrides: dict[str, object] = {"host": host, "port": port, "data": data}
    settings = Settings.model_validate({k: v for k, v in overrides.items() if v is not None})
    keys = KeyStore(settings.data)
    try:
        check_bind(settings, keys)
    except KeysRequired as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    finally:
        keys.close()
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level=log_level)
