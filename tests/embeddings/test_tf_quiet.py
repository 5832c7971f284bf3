"""TensorFlow's load-time notices stay out of stderr (weights conversion, training and ``make test`` output), and
other stderr output still gets through."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow

SCRIPT = """
import sys
from embeddings.tf_quiet import import_tensorflow
tf = import_tensorflow()
assert tf.constant(2.0).numpy() == 2.0
print("after import", file=sys.stderr)
"""


def test_importing_tensorflow_prints_no_notices() -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)
    run = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "oneDNN" not in run.stderr and "absl::InitializeLog" not in run.stderr, run.stderr
    assert "after import" in run.stderr
