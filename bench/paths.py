"""Default locations of the benchmarks' inputs and outputs, relative to the repository: the LFW data set beside it
(``../shared/data/lfw``; every script takes it by flag), results under the git-ignored ``reports/``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
LFW = REPO.parent / "shared" / "data" / "lfw"
"""LFW: ``lfw-deepfunneled/``, ``pairs.txt``, ``pairsDevTrain.txt``, ``pairsDevTest.txt``."""
REPORTS = REPO / "reports"
"""Where benchmark results go by default (git-ignored)."""


def write_report(out: Path | None, result: Any) -> None:
    """``result`` as indented JSON in ``out`` (its folder made first); nothing when no output file was asked for."""
    if out is None:
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
