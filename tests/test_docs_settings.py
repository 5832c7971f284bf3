"""docs/API.md's settings table names every setting the service reads (docs/DEPLOY.md points there for all of
them), and names none that does not exist."""

from __future__ import annotations

import re
from pathlib import Path

from service.config import Settings

API_DOC = Path(__file__).resolve().parents[1] / "docs" / "API.md"
OUTSIDE_SETTINGS = {"FACEREC_CACHE", "FACEREC_WEIGHTS"}
"""Read by embeddings/weights.py, before any Settings exist."""


def test_the_settings_table_matches_the_settings() -> None:
    text = API_DOC.read_text()
    table = text[text.index("## Settings") : text.index("## CLI")]
    documented = set(re.findall(r"`(FACEREC_[A-Z0-9_]+)`", table))
    expected = {f"FACEREC_{name.upper()}" for name in Settings.model_fields}
    assert sorted(expected - documented) == []  # a setting nobody can find
    assert sorted(documented - expected - OUTSIDE_SETTINGS) == []  # a setting that does not exist
