"""Helpers of the backup tests: the CLI in this process, a folder's modes, a registered model directory."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

from typer.testing import CliRunner

from embeddings.weights import MODEL_ID as PRETRAINED
from service.cli import app


def run_cli(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    """``facerec ARGS`` through typer's runner: the exit code and the output (stdout and stderr)."""
    result = CliRunner().invoke(app, list(args), env=env)
    return result.exit_code, result.output


def tree(root: Path) -> dict[str, int]:
    """Every path under ``root`` (itself ``.``) and its permission bits."""
    out = {".": stat.S_IMODE(root.stat().st_mode)}
    for p in root.rglob("*"):
        out[p.relative_to(root).as_posix()] = stat.S_IMODE(p.stat().st_mode)
    return out


def register(cache: Path, model_id: str) -> None:
    """A model directory as ``facerec train`` leaves it: a valid card and a weights file."""
    folder = cache / "models" / model_id
    folder.mkdir(parents=True)
    card = {
        "model_id": model_id, "base_model_id": PRETRAINED, "created": "2026-12-01T00:00:00+00:00", "status": "accepted",
        "threshold": 1.0, "data": {}, "params": {}, "validation": {"before": {}, "after": {}}, "train_seconds": 1.0,
    }  # fmt: skip
    (folder / "card.json").write_text(json.dumps(card))
    (folder / "model.weights.h5").write_bytes(os.urandom(4096) + model_id.encode())
