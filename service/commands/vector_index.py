"""``facerec gallery reconcile`` and ``facerec gallery rebuild-index``: keep a Milvus vector index (the
``FACEREC_VECTOR_BACKEND=milvus`` engine) in step with the PostgreSQL gallery it indexes."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from embeddings.errors import FaceRecError

if TYPE_CHECKING:
    from service.gallery.milvus import MilvusGallery

DATABASE_URL = typer.Option(
    ...,
    "--database-url",
    envvar="FACEREC_DATABASE_URL",
    show_envvar=False,
    help="postgresql://user:password@host:port/db (default: FACEREC_DATABASE_URL).",
)


@contextmanager
def _opened(url: str) -> Iterator[MilvusGallery]:
    from service.commands.backend import load_settings
    from service.gallery.milvus import MilvusGallery, open_milvus
    from service.milvus_backend import milvus_options

    backend = open_milvus(url, milvus_options(load_settings()), sync_interval_s=0)
    try:
        assert isinstance(backend.gallery, MilvusGallery)
        yield backend.gallery
    finally:
        backend.close()


def reconcile(
    database_url: str = DATABASE_URL,
    repair: bool = typer.Option(False, "--repair", help="Fix what differs (default: report only)."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Compare Milvus (FACEREC_MILVUS_URI) with PostgreSQL: faces missing from Milvus, orphaned vectors (erased
    faces) and stale-model vectors; with --repair, upsert/delete to fix them. Exits 1 if differences remain."""
    from service.gallery.milvus.reconcile import reconcile as run

    err = Console(stderr=True)
    try:
        with _opened(database_url) as gallery:
            gallery.drain()  # pending outbox rows are not differences: apply them first
            report = run(gallery, repair=repair)
            after = run(gallery) if repair else report
    except FaceRecError as exc:
        err.print(f"error: {exc}", markup=False, highlight=False)
        raise typer.Exit(2) from None
    summary = report.summary()
    summary["remaining"] = after.differences
    if as_json:
        typer.echo(json.dumps(summary))
    else:
        out = Console()
        out.print(f"{'model':<32} {'faces':>10} {'vectors':>10} {'missing':>8} {'orphaned':>9} {'stale':>6}")
        for model, d in summary["models"].items():
            out.print(
                f"{model:<32} {d['faces']:>10} {d['vectors']:>10} {d['missing']:>8} {d['orphaned']:>9} "
                f"{d['stale_model']:>6}",
                markup=False,
            )
        verb = "repaired" if repair and report.differences else "found"
        out.print(f"{report.differences} difference(s) {verb}; {after.differences} remaining", markup=False)
    if after.differences:
        raise typer.Exit(1)


def rebuild_index(
    database_url: str = DATABASE_URL,
    batch: int = typer.Option(5_000, "--batch", min=1, help="Faces per Milvus upsert."),
    yes: bool = typer.Option(False, "--yes", help="Do not ask before dropping the collections."),
) -> None:
    """Drop this gallery's Milvus collections and re-create them from PostgreSQL, with a progress bar (index type:
    FACEREC_MILVUS_INDEX). Searches can miss faces until it ends: run it before sending traffic."""
    from service.gallery.milvus.reconcile import rebuild

    err = Console(stderr=True)
    if not yes:
        typer.confirm("Drop and rebuild the Milvus index of this gallery?", abort=True)
    try:
        with (
            _opened(database_url) as gallery,
            Progress(TextColumn("faces"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), console=err) as bar,
        ):
            task = bar.add_task("faces", total=None)
            counts = rebuild(
                gallery,
                batch=batch,
                progress=lambda done, total: bar.update(task, completed=done, total=max(total, 1)),
            )
    except FaceRecError as exc:
        err.print(f"error: {exc}", markup=False, highlight=False)
        raise typer.Exit(2) from None
    for model, n in sorted(counts.items()):
        typer.echo(f"{model}: {n} faces indexed")


def register(app: typer.Typer) -> None:
    """Add the commands to the ``facerec gallery`` group."""
    app.command("reconcile")(reconcile)
    app.command("rebuild-index")(rebuild_index)
