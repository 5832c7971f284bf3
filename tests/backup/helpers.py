"""Helpers of the backup tests: the CLI in this process, a folder's modes."""

from __future__ import annotations

import stat
from pathlib import Path

from typer.testing import CliRunner

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
