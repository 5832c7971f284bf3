"""Default locations of the benchmarks' inputs and outputs, relative to the repository: the LFW data set beside it
(``../shared/data/lfw``; every script takes it by flag), results under the git-ignored ``reports/``."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LFW = REPO.parent / "shared" / "data" / "lfw"
"""LFW: ``lfw-deepfunneled/``, ``pairs.txt``, ``pairsDevTrain.txt``, ``pairsDevTest.txt``."""
REPORTS = REPO / "reports"
"""Where benchmark results go by default (git-ignored)."""
