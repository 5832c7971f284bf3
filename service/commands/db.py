"""``facerec db start|stop|status|url``: a local PostgreSQL 18 + pgvector for development (service/devdb.py).

    facerec db start                      # creates the cluster on first use, prints the URL
    export FACEREC_DATABASE_URL="$(facerec db url)"
    facerec serve --port 8001 & facerec serve --port 8002
    facerec db stop

The cluster lives in ``--dir`` (default ``<data dir>/postgres``) and listens on 127.0.0.1 only. Under root the
server runs as the system user ``facerec-pg``.
"""

from __future__ import annotations

from pathlib import Path

import typer

from service.commands.backend import load_settings
from service.devdb import DevCluster, DevDbError

app = typer.Typer(help="A local PostgreSQL + pgvector for development (no Docker).", no_args_is_help=True)

DIR_OPTION = typer.Option(None, "--dir", help="Cluster directory (default: <data dir>/postgres).")


def _cluster(directory: Path | None) -> DevCluster:

    return DevCluster(directory if directory is not None else load_settings().data / "postgres")


def _fail(exc: Exception) -> typer.Exit:
    typer.echo(f"error: {exc}", err=True)
    return typer.Exit(1)


@app.command("start")
def start(
    directory: Path = DIR_OPTION,
    port: int = typer.Option(None, "--port", min=1, max=65535, help="TCP port (default: the last one, or a free one)."),
) -> None:
    """Create (first time) and start the cluster; print the service's connection URL."""
    cluster = _cluster(directory)
    try:
        cluster.start(port)
    except DevDbError as exc:
        raise _fail(exc) from None
    typer.echo(cluster.url())
    typer.echo(f"PostgreSQL + pgvector on 127.0.0.1:{cluster.port()} (cluster in {cluster.root})", err=True)


@app.command("stop")
def stop(
    directory: Path = DIR_OPTION,
    immediate: bool = typer.Option(False, "--immediate", help="Stop like a crash (recovery at the next start)."),
) -> None:
    """Stop the cluster (it keeps its data)."""
    cluster = _cluster(directory)
    if not cluster.running():
        what = "is not running" if cluster.initialised else "holds no cluster"
        typer.echo(f"{cluster.root} {what}: nothing to stop", err=True)
        return
    try:
        cluster.stop("immediate" if immediate else "fast")
    except DevDbError as exc:
        raise _fail(exc) from None


@app.command("url")
def url(
    directory: Path = DIR_OPTION,
    superuser: bool = typer.Option(False, "--superuser", help="The URL of the superuser `postgres` instead."),
) -> None:
    """Print the connection URL (for FACEREC_DATABASE_URL)."""
    cluster = _cluster(directory)
    if not cluster.initialised:
        raise _fail(RuntimeError(f"no cluster in {cluster.root}: run `facerec db start` first"))
    typer.echo(cluster.url(user="postgres") if superuser else cluster.url())


@app.command("status")
def status(directory: Path = DIR_OPTION) -> None:
    """Say whether the cluster runs, and where; exit 1 if it does not."""
    cluster = _cluster(directory)
    if not cluster.running():
        typer.echo(f"not running ({cluster.root})")
        raise typer.Exit(1)
    typer.echo(f"running on 127.0.0.1:{cluster.port()} ({cluster.root})")
