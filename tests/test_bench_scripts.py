"""Every benchmark script starts the way docs/ runs it (``.venv/bin/python bench/<name>.py``, the repository root
not on ``sys.path``): ``--help`` exits 0 and prints the usage. The bench modules without a ``__main__`` (helpers
of the scripts) import as ``bench.<name>``."""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = sorted(p for p in (REPO / "bench").glob("*.py") if p.name != "__init__.py")


def _is_script(path: Path) -> bool:
    return 'if __name__ == "__main__":' in path.read_text()


def _start(path: Path) -> tuple[Path, subprocess.CompletedProcess[str]]:
    if _is_script(path):
        command = [sys.executable, str(path), "--help"]
    else:
        command = [sys.executable, "-c", f"import bench.{path.stem}"]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # as a user runs them
    return path, subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)


def test_every_bench_script_starts_from_the_command_line() -> None:
    assert sum(_is_script(p) for p in SCRIPTS) > 30
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(_start, SCRIPTS))
    failures = [
        f"{path.name}: rc {run.returncode}: {(run.stderr or run.stdout)[-300:]}"
        for path, run in results
        if run.returncode != 0 or (_is_script(path) and "usage:" not in run.stdout)
    ]
    assert not failures, "\n".join(failures)
