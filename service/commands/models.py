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


def _change(val: dict[str, object], key: str) -> str:
    b, a = val.get("before") or {}, val.get("after") or {}
    if not isinstance(b, dict) or not isinstance(a, dict):
        return "-"
    return f"{_fmt(b.get(key))} -> {_fmt(a.get(key))}"


@app.command("list")
def list_cmd(as_json: bool = JSON_OPTION) -> None:
    """Every model id with its kind, gate status, base model, threshold (L2) and the validation figures from its
    card (gate people, before -> after). A rejected model is listed but cannot be selected. Unusable model
    directories are listed with the reason."""
    models, broken = list_models()
    if as_json:
        typer.echo(json.dumps({"models": [m.summary() for m in models], "invalid": broken}))
        return
    table = Table(title=f"{len(models)} models ({models_dir()})")
    table.add_column("model id", no_wrap=True)
    for name in ("kind", "status", "base", "threshold", "accuracy", "TAR@FAR1e-3", "TPIR@FPIR1%"):
        table.add_column(name)
    for m in models:
        s = m.summary()
        if m.kind == "pretrained":
            lfw = s["validation"]["lfw_view2"]
            acc, tar, tpir = f"{_fmt(lfw['accuracy'])} (LFW)", f"{_fmt(lfw['tar_at_far_1e-3'])} (LFW)", "-"
        else:
            val = s["validation"] if isinstance(s["validation"], dict) else {}
            acc, tar, tpir = (_change(val, k) for k in ("accuracy", "tar_at_far_1e-3", "tpir_at_fpir_1e-2"))
        status = m.status if m.selectable else "[red]rejected (not selectable)[/]"
        table.add_row(m.model_id, m.kind, status, s["base_model_id"] or "-", _fmt(m.threshold, 3), acc, tar, tpir)
    console = Console(width=None if sys.stdout.isatty() else 200)
    console.print(table)
    for name, reason in broken.items():
        console.print(f"[red]unusable[/] {name}: {reason}")
