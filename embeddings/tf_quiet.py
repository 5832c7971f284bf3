"""Import TensorFlow without its load-time notices on stderr.

TensorFlow prints, at import and whatever ``TF_CPP_MIN_LOG_LEVEL`` says, an absl line ("All log messages before
absl::InitializeLog() is called are written to STDERR") and an INFO line "oneDNN custom operations are on ...",
twice each (they come from its C++ libraries before Python's logging exists). Weights conversion, training and
evaluation print them into every CLI run and into ``make test``. :func:`import_tensorflow` runs the first import
with file descriptor 2 redirected to a temporary file, then writes back every line except those notices, so
a real error on stderr is still seen.
"""

from __future__ import annotations

import os
import sys
import tempfile
from typing import Any

NOTICES = ("absl::InitializeLog() is called are written to STDERR", "oneDNN custom operations are on")
"""Substrings of the stderr lines dropped from TensorFlow's first import."""


def import_tensorflow() -> Any:
    """``import tensorflow`` (the module), its load-time notices filtered out of stderr on the first import."""
    if "tensorflow" in sys.modules:
        import tensorflow

        return tensorflow
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import tensorflow
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            for line in captured.read().decode(errors="replace").splitlines(keepends=True):
                if not any(n in line for n in NOTICES):
                    sys.stderr.write(line)
            sys.stderr.flush()
    return tensorflow
