"""``facerec audit tail``: the last records of the audit log (``<data>/audit.log``, or the database's)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from embeddings.errors import FaceRecError
from service.commands.backend import load_settings, opened_stores

app = typer.Typer(help="Read the audit log of gallery and key changes.", no_args_is_help=True)


@app.command("tail")
def tail(
    n: int = typer.Option(20, "-n", "--lines", min=1, help="How many records (newest last)."),
    data: Path = typer.Option(None, "--data", help="Data dir (default $FACEREC_DATA or ./data)."),
    as_json: bool = typer.Option(False, "--json", help="Print the records as JSON lines."),
) -> None:
    """The last N records: time, actor, action, target."""
    with opened_stores(load_settings(data=data), existing=True) as backend:
        try:
            records = backend.audit.tail(n)
        except FaceRecError as exc:  # the log cannot be read (a folder, an I/O error): one line
            typer.echo(f"error: {exc.code}: {exc.message}", err=True)
            raise typer.Exit(1) from exc
    for rec in records:
        if as_json:
            typer.echo(json.dumps(rec))
            continue
        actor = rec.get("actor")
        who = actor if isinstance(actor, str) else f"{(actor or {}).get('key_id')} ({(actor or {}).get('name') or '-'})"
        target = " ".join(f"{k}={v}" for k, v in (rec.get("target") or {}).items())
        count = f" count={rec['count']}" if "count" in rec else ""
        typer.echo(f"{rec.get('ts')}  {who}  {rec.get('action')}  {target}{count}")
