"""The real weights and the default pipeline must keep giving the same distances between fixed faces."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from tests.golden import GOLDEN_FILE, golden_matrix


def test_golden_distances_do_not_drift(analyzer: object, celebrity_root: Path) -> None:
    expected = json.loads(GOLDEN_FILE.read_text())
    names, matrix = golden_matrix(analyzer, celebrity_root)
    assert names == expected["images"]
    off_diagonal = ~np.eye(len(names), dtype=bool)  # self-distances are sqrt(rounding noise), not signal
    drift = np.abs(matrix - np.array(expected["distances"]))[off_diagonal]
    assert drift.max() < 1e-3, f"max drift {drift.max():.2e}:\n{np.round(matrix, 4)}"
    # Sanity of the stored matrix itself: same-person pairs are the closest.
    stored = np.array(expected["distances"])
    assert stored[0, 1] < min(stored[0, 2:].min(), stored[1, 2:].min())
    assert stored[2, 3] < min(stored[2, [0, 1, 4, 5]].min(), stored[3, [0, 1, 4, 5]].min())
