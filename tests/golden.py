"""The golden distance matrix: a few fixed faces of the 5-celebrity set, embedded with the default pipeline and
the fp32 (TensorFlow) encoder.

``python -m tests.golden`` rewrites ``tests/data/golden.json`` (only when the pipeline is changed on purpose);
``tests/embeddings/test_golden.py`` checks that the real weights still give the same distances within 1e-3.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

GOLDEN_FILE = Path(__file__).parent / "data" / "golden.json"
GOLDEN_IMAGES = [
    ("ben_afflek", 0),
    ("ben_afflek", 1),
    ("madonna", 0),
    ("madonna", 2),
    ("elton_john", 1),
    ("mindy_kaling", 0),
]
"""(person, index in the sorted val folder) of each golden face."""


def golden_matrix(analyzer: object, root: Path) -> tuple[list[str], np.ndarray]:
    """Names of the golden images and the L2 distance matrix between their primary faces."""
    from embeddings import FaceAnalyzer, pairwise_distances

    assert isinstance(analyzer, FaceAnalyzer)
    names, embs = [], []
    for person, index in GOLDEN_IMAGES:
        path = sorted((root / "val" / person).iterdir())[index]
        face = analyzer.single_face(path.read_bytes(), largest=True, check_quality=False)
        names.append(f"{person}/{path.name}")
        embs.append(face.embedding)
    return names, pairwise_distances(np.stack(embs), np.stack(embs)).astype(np.float64)


def main() -> None:
    from embeddings import AnalyzerConfig, FaceAnalyzer, weights

    names, matrix = golden_matrix(FaceAnalyzer(AnalyzerConfig(encoder="fp32")), weights.sample_dataset_path())
    GOLDEN_FILE.parent.mkdir(parents=True, exist_ok=True)
    GOLDEN_FILE.write_text(json.dumps({"images": names, "distances": np.round(matrix, 5).tolist()}, indent=1) + "\n")
    print(f"wrote {GOLDEN_FILE}")


if __name__ == "__main__":
    main()
