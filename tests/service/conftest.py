"""Shared fixtures: the real weights and the 5-celebrity set."""

from __future__ import annotations

from pathlib import Path

import pytest

from embeddings import weights


@pytest.fixture(scope="session")
def dataset() -> Path:
    """The 5-celebrity set (``train/`` and ``val/``, a folder per person), with the real weights resolved."""
    weights.resolve()
    path = weights.sample_dataset_path()
    if not (path / "train").is_dir():
        pytest.fail(f"the 5-celebrity set is missing at {path}: run `facerec weights fetch`")
    return path
