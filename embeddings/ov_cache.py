"""OpenVINO's compiled-model cache, shared by the encoder and the MTCNN networks."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


def compile_cache(core: Any, folder: Path) -> None:
    """Let OpenVINO keep its compiled form of the models in ``folder``/``ov-cache`` (when ``folder`` is writable):
    a later start loads it instead of compiling again (FaceNet: ~0.4 s instead of ~1 s on the 2-core machine)."""
    if os.access(folder, os.W_OK):
        core.set_property({"CACHE_DIR": str(folder / "ov-cache")})
