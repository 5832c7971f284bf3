"""``facerec gallery migrate --from DATA_DIR --to postgresql://...``: copy an embedded gallery into PostgreSQL."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import TaskID

from embeddings.errors import FaceRecError
from service.commands.progress import progress_bar

app = typer.Typer(help="Move a gallery between backends.", no_args_is_help=True)


@app.command("migrate")
def migrate(
    source: Path = typer.Option(..., "--from", help="The embedded gallery's data dir (its server stopped)."),
    to: str = typer.Option(
        ...,
        "--to",
        envvar="FACEREC_DATABASE_URL",
        show_envvar=False,
        help="postgresql://user:password@host:port/db (default: FACEREC_DATABASE_URL).",
    ),
    batch: int = typer.Option(2_000, "--batch", min=1, help="Faces copied per transaction."),
    sample: int = typer.Option(200, "--sample", min=0, help="Probes searched in both galleries at the end."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Copy subjects, faces (embeddings, crops, staged re-index embeddings), API keys and the audit log into
    PostgreSQL, keeping every id; then the data dir's events, streams, video jobs and photo library. Resumable: run
    it again to continue after an interruption. Ends by comparing counts and a sample of searches; exits 1 if
    anything differs."""
    from service.gallery.postgres.migrate import migrate_gallery
    from service.pgstores.migrate_media import copy_media

    err = Console(stderr=True)
    with progress_bar(err, width=24, disable=as_json) as bar:
        tasks: dict[str, TaskID] = {}

        def progress(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=max(total, 1))
            bar.update(tasks[stage], completed=done, total=max(total, 1))

        try:
            report = migrate_gallery(source, to, batch=batch, sample=sample, progress=progress)
            report.counts.update(copy_media(source, to, batch=batch, progress=progress))
        except FaceRecError as exc:
            err.print(f"error: {exc}", markup=False, highlight=False)
            raise typer.Exit(2) from None
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "source": report.source,
                    "target": report.target,
                    "resumed": report.resumed,
                    "counts": {k: {"source": s, "target": t} for k, (s, t) in report.counts.items()},
                    "probes": report.probes,
                    "differences": report.differences,
                    "ok": report.ok,
                }
            )
        )
    else:
        out = Console()
        out.print(f"{report.source} -> {report.target}{' (resumed)' if report.resumed else ''}", markup=False)
        for name, (s, t) in report.counts.items():
            out.print(f"  {name:<32} {s:>10} {t:>10}  {'ok' if s == t else 'DIFFERENT'}", markup=False)
        out.print(f"  {report.probes} probes searched in both: {len(report.differences)} differences", markup=False)
        for line in report.differences[:20]:
            out.print(f"    {line}", markup=False)
    if not report.ok:
        raise typer.Exit(1)
