"""Choosing the encoder backend by precision (``AnalyzerConfig.encoder`` / ``FACEREC_ENCODER``).

* ``fp32``: the reference Keras model on TensorFlow (:class:`embeddings.facenet.FaceNetEncoder`).
* ``bf16``: the same model converted to OpenVINO, run with bfloat16 arithmetic.
* ``int8``: the same model statically quantised to int8 by NNCF, run by OpenVINO.

Every backend has the same interface: ``encode(uint8 (N, 160, 160, 3)) -> unit float32 (N, 128)``, ``raw``,
``warm_up``, ``batch_size``, ``flip_tta``, ``precision``. The precision is not part of the model id: bf16
embeddings are within 0.026 (L2) of fp32 on every LFW face, so they mix with fp32 galleries; int8 keeps the LFW
accuracy but moves a few faces by up to 0.39, so a gallery should be re-embedded before switching to it for good
(docs/BENCHMARKS.md, "Encoder precision").
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Protocol

import numpy as np
import numpy.typing as npt

from embeddings.facenet import BatchedEncoder, FaceNetEncoder

Precision = Literal["fp32", "bf16", "int8"]
PRECISIONS: tuple[Precision, ...] = ("fp32", "bf16", "int8")
DEFAULT_PRECISION: Precision = "bf16"
"""The default backend, chosen by the measurements in docs/BENCHMARKS.md ("Encoder precision")."""


class Encoder(Protocol):
    """What :class:`embeddings.FaceAnalyzer` needs of its encoder: the backends here, or a wrapper around one
    (the service's micro-batcher)."""

    flip_tta: bool

    @property
    def precision(self) -> str:
        """``fp32``, ``bf16`` or ``int8``."""
        ...

    def encode(self, crops: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
        """Aligned RGB uint8 crops (N, 160, 160, 3) -> unit float32 embeddings (N, 128), row i for crop i."""
        ...

    def warm_up(self) -> None:
        """Run the network once so that the first real call pays no compilation cost."""
        ...


def create_encoder(
    weights_path: Path,
    precision: str = DEFAULT_PRECISION,
    *,
    batch_size: int = 32,
    flip_tta: bool = False,
    cache_root: Path | None = None,
) -> BatchedEncoder:
    """The encoder of ``weights_path`` at ``precision``; a fast path converts (once, cached) on first use."""
    if precision not in PRECISIONS:
        raise ValueError(f"encoder precision must be one of {', '.join(PRECISIONS)}; got {precision!r}")
    if precision == "fp32":
        return FaceNetEncoder(weights_path, batch_size=batch_size, flip_tta=flip_tta)
    from embeddings.facenet_openvino import OpenVinoEncoder

    return OpenVinoEncoder(
        weights_path, precision=precision, batch_size=batch_size, flip_tta=flip_tta, cache_root=cache_root
    )
