"""service/lean_imports.py: Keras loads and the detector and encoder run with matplotlib and sklearn blocked."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_server_stack_runs_without_the_optional_imports(celebrity_root: Path) -> None:
    """In a fresh process: after blocking, Keras/TensorFlow import, a face is detected and encoded, and neither
    blocked package was loaded (``sys.modules`` still holds the ``None`` marker)."""
    code = r"""
import json, sys
from service.lean_imports import block_optional_imports
blocked = block_optional_imports()
import keras, tensorflow
from embeddings.analyzer import FaceAnalyzer
from pathlib import Path

import pytest
photo = sorted((Path(sys.argv[1]) / "val").rglob("*.jpg"))[0]
faces = FaceAnalyzer().analyze(photo.read_bytes())
print(json.dumps({"blocked": blocked, "faces": len(faces), "norm": float((faces[0].embedding ** 2).sum()),
                  "loaded": [n for n in ("matplotlib", "sklearn") if sys.modules.get(n) is not None]}))
"""
    out = subprocess.run(
        [sys.executable, "-c", code, str(celebrity_root)], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["blocked"] == ["matplotlib", "sklearn"]
    assert result["loaded"] == []
    assert result["faces"] >= 1
    assert abs(result["norm"] - 1.0) < 1e-3


def test_already_imported_packages_are_left_alone() -> None:
    """A package already imported (here ``json``) is not replaced."""
    from service.lean_imports import block_optional_imports

    assert block_optional_imports(("json",)) == []
    assert sys.modules["json"] is json
