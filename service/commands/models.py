"""``facerec models list``: the embedding models FACEREC_MODEL can name, with their card figures."""

from __future__ import annotations

import json
import sys

import typer
from rich.console import Console
from rich.table import Table

from embeddings.models import list_models
from embeddings.training.model_dir import models_dir
from service.commands.backend import JSON_OPTION

app = typer.Typer(help="List the embedding models (pretrained and fine-tuned).", no_args_is_help=True)


def _fmt(value: object, digits: int = 4) -> str:
    return f"{value:.{digits}f}" if isinstance(value, int | float) and not isinstance(value, bool) else "-"


@app.command("list")
def list_cmd(as_json: bool = JSON_OPTION) -> None:
    """Every model id with its kind, base model, threshold (L2) and validation figures from its card.
    Unusable model directories are listed with the reason."""
    models, broken = list_models()
    if as_json:
        typer.echo(json.dumps({"models": [m.summary() for m in models], "invalid": broken}))
        return
    table = Table(title=f"{len(models)} models ({models_dir()})")
    table.add_column("model id", no_wrap=True)
    for name in ("kind", "base", "threshold", "accuracy before", "accuracy after", "TAR@FAR1e-3 after"):
        table.add_column(name)
    for m in models:
        s = m.summary()
        if m.kind == "pretrained":
            lfw = s["validation"]["lfw_view2"]
            before, after, tar = "-", f"{_fmt(lfw['accuracy'])} (LFW)", _fmt(lfw["tar_at_far_1e-3"])
        else:
            val = s["validation"] if isinstance(s["validation"], dict) else {}
            b, a = val.get("before") or {}, val.get("after") or {}
            before, after, tar = _fmt(b.get("accuracy")), _fmt(a.get("accuracy")), _fmt(a.get("tar_at_far_1e-3"))
        table.add_row(m.model_id, m.kind, s["base_model_id"] or "-", _fmt(m.threshold, 3), before, after, tar)
    console = Console(width=None if sys.stdout.isatty() else 160)
    console.print(table)
    for name, reason in broken.items():
        console.print(f"[red]unusable[/] {name}: {reason}")
