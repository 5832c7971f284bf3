"""``facerec reindex --model <id>``: re-embed every enrolled face with another model (see service/reindex.py)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from embeddings.errors import FaceRecError
from service.audit import cli_actor
from service.commands.backend import DATA_OPTION, JSON_OPTION, load_settings
from service.reindex import reindex as run_reindex


def reindex(
    model: str = typer.Option(..., "--model", help="The model id to re-embed with (`facerec models list`)."),
    data: Path = DATA_OPTION,
    batch_size: int = typer.Option(64, "--batch-size", min=1, help="Faces embedded and committed per batch."),
    limit: int = typer.Option(
        None, "--limit", min=1, help="Stop after this many faces (run again to continue where it stopped)."
    ),
    as_json: bool = JSON_OPTION,
) -> None:
    """Re-embed the gallery's stored face crops with MODEL. Resumable: a second run continues where one stopped.

    With no server on the data dir, the gallery switches to MODEL when every face is embedded; serve it with
    FACEREC_MODEL=MODEL. With a server running, the server keeps serving its model meanwhile, and switches
    when it is restarted with FACEREC_MODEL=MODEL. Refused if any face has no stored crop.
    """
    settings = load_settings(data=data)

    def progress(done: int, total: int) -> None:
        if not as_json:
            typer.echo(f"embedded {done}/{total}", err=True)

    try:
        report = run_reindex(settings, model, batch_size=batch_size, limit=limit, progress=progress, actor=cli_actor())
    except FaceRecError as exc:
        typer.echo(f"error: {exc.code}: {exc.message}", err=True)
        raise typer.Exit(1) from exc
    except OSError as exc:  # a data dir this user may not write (the server's), a full disk
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    if as_json:
        typer.echo(json.dumps(vars(report)))
    else:
        typer.echo(f"{report.state}: {report.message} ({report.embedded} embedded in {report.seconds:.1f} s)")
