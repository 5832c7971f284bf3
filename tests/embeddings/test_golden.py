"""The real weights and the default pipeline must keep giving the same distances between fixed faces.

Pinned to the fp32 (TensorFlow) encoder the golden matrix was built with; the fast paths (bf16, int8) are held to
fp32 by tests/embeddings/test_encoder_precision.py instead.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from embeddings import AnalyzerConfig, FaceAnalyzer
from tests.golden import GOLDEN_FILE, golden_matrix

pytestmark = pytest.mark.slow  # the real weights


@pytest.fixture(scope="module")
def fp32_analyzer(analyzer: FaceAnalyzer, weights_path: Path) -> FaceAnalyzer:
    """The session analyzer when it runs fp32, else an fp32 one with the same (default) pipeline settings."""
    if analyzer.config.encoder == "fp32":
        return analyzer
    return FaceAnalyzer(AnalyzerConfig(encoder="fp32"), weights_path=weights_path)


def test_golden_distances_do_not_drift(fp32_analyzer: FaceAnalyzer, celebrity_root: Path) -> None:
    expected = json.loads(GOLDEN_FILE.read_text())
    names, matrix = golden_matrix(fp32_analyzer, celebrity_root)
    assert names == expected["images"]
    off_diagonal = ~np.eye(len(names), dtype=bool)  # self-distances are sqrt(rounding noise), not signal
    drift = np.abs(matrix - np.array(expected["distances"]))[off_diagonal]
    assert drift.max() < 1e-3, f"max drift {drift.max():.2e}:\n{np.round(matrix, 4)}"
    # Sanity of the stored matrix itself: same-person pairs are the closest.
    stored = np.array(expected["distances"])
    assert stored[0, 1] < min(stored[0, 2:].min(), stored[1, 2:].min())
    assert stored[2, 3] < min(stored[2, [0, 1, 4, 5]].min(), stored[3, [0, 1, 4, 5]].min())
