"""``facerec gallery migrate --from DATA_DIR --to postgresql://...``: copy an embedded gallery into PostgreSQL;
``facerec gallery vacuum [--full]``: make PostgreSQL drop erased people's bytes from its files."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import TaskID

from embeddings.errors import FaceRecError
from service.commands.progress import progress_bar
from service.commands.vector_index import DATABASE_URL

app = typer.Typer(
    help="Move a gallery between backends; keep a PostgreSQL gallery's files clean.", no_args_is_help=True
)


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


@app.command("vacuum")
def vacuum(
    database_url: str = DATABASE_URL,
    full: bool = typer.Option(
        False,
        "--full",
        help="VACUUM FULL: rewrite the tables (the only way erased crops leave the files); locks each table while it "
        "runs, so enrolment and identify wait.",
    ),
    lock_timeout: float = typer.Option(
        5.0, "--lock-timeout", min=0.001, help="Seconds to wait for a table's lock before giving up (exit 1)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Make PostgreSQL drop erased people's bytes from the tables that hold faces, crops, embeddings and names
    (docs/GALLERY.md, "What erasure removes"). Without --full, what autovacuum would do, now: embeddings go from
    the tables and the HNSW index; with --full, the tables are rewritten and crops go too. Exits 1 if a table's
    lock is not granted in time or the user may not vacuum it (the tables before it are done)."""
    from service.gallery.postgres.maintenance import VacuumRefused, vacuum_personal_data

    err = Console(stderr=True)
    try:
        report = vacuum_personal_data(
            database_url,
            full=full,
            lock_timeout_s=lock_timeout,
            progress=None if as_json else lambda table: err.print(f"vacuuming {table}", markup=False),
        )
    except VacuumRefused as exc:
        err.print(f"error: {exc}", markup=False, highlight=False)
        raise typer.Exit(1) from None
    except FaceRecError as exc:
        err.print(f"error: {exc}", markup=False, highlight=False)
        raise typer.Exit(2) from None
    if as_json:
        typer.echo(json.dumps({"full": full, "tables": [dataclasses.asdict(t) for t in report]}))
        return
    out = Console()
    for t in report:
        before, after = t.bytes_before / 2**20, t.bytes_after / 2**20
        out.print(f"  {t.table:<16} {before:>9.1f} MiB -> {after:>9.1f} MiB  {t.seconds:.2f} s", markup=False)
