"""``facerec identify IMAGE`` and ``facerec verify A B``, locally or through a server."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from service.commands.backend import Backend, backend_command, read_image, reading_command

THRESHOLD_OPTION = typer.Option(
    None, "--threshold", min=0.0, max=2.0, help="L2 distance, 0 to 2 (as the API); <= threshold is a match."
)


@reading_command
def identify(
    backend: Backend,
    image: Path = typer.Argument(..., exists=True, dir_okay=False, help="The photo."),
    top_k: int = typer.Option(None, "--top-k", min=1, max=100, help="Candidates per face."),
    threshold: float = THRESHOLD_OPTION,
    *,
    as_json: bool,
) -> None:
    """Name every face in IMAGE (or say unknown), with the nearest candidates."""
    result = backend.identify(read_image(image), threshold=threshold, top_k=top_k)
    if as_json:
        typer.echo(json.dumps(result))
        return
    table = Table(
        "#",
        "box (x, y, w, h) px",
        "match",
        "distance",
        "candidates",
        title=f"{len(result['faces'])} faces, threshold {result['threshold']:.3f} (L2)",
    )
    for i, face in enumerate(result["faces"]):
        box = face["box"]
        match = face["match"]
        cands = ", ".join(f"{c['name']} {c['distance']:.3f}" for c in face["candidates"])
        table.add_row(
            str(i),
            ", ".join(f"{box[k]:.0f}" for k in ("x", "y", "width", "height")),
            match["name"] if match else "unknown",
            f"{match['distance']:.3f}" if match else "-",
            cands or "-",
        )
    Console().print(table)


@backend_command
def verify(
    backend: Backend,
    image_a: Path = typer.Argument(..., exists=True, dir_okay=False, help="First photo."),
    image_b: Path = typer.Argument(..., exists=True, dir_okay=False, help="Second photo."),
    threshold: float = THRESHOLD_OPTION,
    *,
    as_json: bool,
) -> None:
    """Are the largest faces of A and B the same person? Exit 0 either way; read `match`."""
    result = backend.verify(read_image(image_a), read_image(image_b), threshold=threshold)
    if as_json:
        typer.echo(json.dumps(result))
        return
    verdict = "same person" if result["match"] else "different people"
    op = "<=" if result["match"] else ">"
    Console().print(
        f"[bold]{verdict}[/]: distance {result['distance']:.3f} {op} threshold {result['threshold']:.3f} "
        f"(similarity {result['similarity']:.3f})"
    )
