"""Splitting FaceNet at a block boundary into a frozen head and a trainable tail that share the full model's layers.

Cut points are block outputs of Inception-ResNet-v1 (keras-facenet layer names): ``Block35_1..5``, ``Mixed_6a``,
``Block17_1..10``, ``Mixed_7a``, ``Block8_1..5``. Everything up to and including the cut is frozen (its output is
what the activation cache stores); the rest, through ``Bottleneck_BatchNorm``, is trained. Because the tail shares
layer objects with the full model, training the tail updates the full model, which is what gets saved.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from embeddings.tf_quiet import import_tensorflow

DEFAULT_CUT = "Mixed_7a"
"""Default: train the last stage (Block8_1..6) and the bottleneck on cached 3x3x1792 Mixed_7a activations."""

CUT_POINTS: tuple[str, ...] = (
    *(f"Block35_{i}" for i in range(1, 6)),
    "Mixed_6a",
    *(f"Block17_{i}" for i in range(1, 11)),
    "Mixed_7a",
    *(f"Block8_{i}" for i in range(1, 6)),
)


def cut_layer_name(cut: str) -> str:
    """The Keras layer whose output is the cut: ``Mixed_*`` themselves, ``BlockNN_i`` their ``_Activation``."""
    if cut not in CUT_POINTS:
        raise ValueError(f"unknown cut point {cut!r}; choose one of {', '.join(CUT_POINTS)}")
    return cut if cut.startswith("Mixed_") else f"{cut}_Activation"


@dataclass
class SplitModel:
    """The full network, its frozen head (input -> cut) and trainable tail (cut -> 128-d bottleneck)."""

    full: Any
    head: Any
    tail: Any
    cut: str

    @property
    def activation_shape(self) -> tuple[int, ...]:
        return tuple(int(d) for d in self.head.output.shape[1:])


def split_model(weights_path: Path, cut: str = DEFAULT_CUT) -> SplitModel:
    """Build ``build_model()``, load ``weights_path`` and split it at ``cut``."""
    import_tensorflow()
    import keras

    from embeddings.facenet import build_model

    full = build_model()
    full.load_weights(str(weights_path))
    tensor = full.get_layer(cut_layer_name(cut)).output
    head = keras.Model(full.input, tensor, name="facenet_head")
    tail = keras.Model(tensor, full.output, name="facenet_tail")
    for layer in head.layers:
        layer.trainable = False
    for layer in tail.layers:
        layer.trainable = True
    return SplitModel(full=full, head=head, tail=tail, cut=cut)
