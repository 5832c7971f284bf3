"""The FaceNet encoder: Inception-ResNet-v1 (keras-facenet's architecture) with a compiled, batched forward pass.

Input faces are aligned 160x160 RGB uint8 crops; they are prewhitened (per-image standardisation, as the model
was trained), run through the network in batches, and L2-normalised, giving float32 (N, 128) unit vectors.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from embeddings.align import CROP_SIZE, prewhiten
from embeddings.errors import WeightsUnavailable
from embeddings.tf_quiet import import_tensorflow
from embeddings.types import EMBEDDING_DIM

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

BOTTLENECK_LAYER = "Bottleneck_BatchNorm"
"""The last weighted layer; its output is the un-normalised 128-d embedding."""

SOURCE_WEIGHTED_LAYERS = 245
"""Weighted layers in the source ``facenet_keras.h5``; every one must load, or the weights are wrong."""


def build_model() -> Any:
    """Build Inception-ResNet-v1 with random weights; output = the un-normalised bottleneck (N, 128)."""
    import_tensorflow()
    import keras
    from keras_facenet.inception_resnet_v1 import InceptionResNetV1

    full = InceptionResNetV1(input_shape=(CROP_SIZE, CROP_SIZE, 3), classes=EMBEDDING_DIM)
    return keras.Model(full.input, full.get_layer(BOTTLENECK_LAYER).output, name="facenet")


def load_source_h5(model: Any, path: Path) -> int:
    """Load weights from H. Taniai's Keras 2 ``facenet_keras.h5`` into ``model`` by layer name.

    Returns the number of layers loaded; raises ``ValueError`` if any weighted layer of the model is missing
    from the file or has a different shape.
    """
    import h5py

    loaded = 0
    with h5py.File(path, "r") as f:
        group = f.get("model_weights", f)
        for layer in model.layers:
            if not layer.weights:
                continue
            if layer.name not in group:
                raise ValueError(f"layer {layer.name!r} is not in {path}")
            layer_group = group[layer.name]
            names = [n.decode() if isinstance(n, bytes) else n for n in layer_group.attrs["weight_names"]]
            arrays = [np.asarray(layer_group[n]) for n in names]
            expected = [tuple(w.shape) for w in layer.weights]
            if [a.shape for a in arrays] != expected:
                raise ValueError(f"layer {layer.name!r}: shapes {[a.shape for a in arrays]} != {expected}")
            layer.set_weights(arrays)
            loaded += 1
    if loaded != SOURCE_WEIGHTED_LAYERS:
        raise ValueError(f"loaded {loaded} weighted layers, expected {SOURCE_WEIGHTED_LAYERS}")
    return loaded


class BatchedEncoder(ABC):
    """The shared encoder contract: prewhiten uint8 crops, run the network in batches of at most ``batch_size``,
    optionally average each face with its mirror image (``flip_tta``), and L2-normalise.

    Subclasses implement :meth:`forward` (one batch, prewhitened float32 (n, 160, 160, 3) -> (n, 128)). With
    ``flip_tta`` the originals and their mirror images go through the network as one concatenated batch.
    """

    precision = "fp32"
    """What the network computes in: ``fp32``, ``bf16`` or ``int8`` (see :mod:`embeddings.encoders`)."""

    def __init__(self, weights_path: Path, *, batch_size: int = 32, flip_tta: bool = False) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.weights_path = Path(weights_path)
        self.batch_size = batch_size
        self.flip_tta = flip_tta

    @abstractmethod
    def forward(self, batch: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """One forward pass on prewhitened float32 (n, 160, 160, 3), n <= ``batch_size``; (n, 128) output."""

    def warm_up(self) -> None:
        """Run the network once so that the first real request pays no tracing or compilation cost."""
        self.encode(np.zeros((1, CROP_SIZE, CROP_SIZE, 3), dtype=np.uint8))

    def raw(self, whitened: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """Run the network on prewhitened float32 (N, 160, 160, 3) input; un-normalised (N, 128) output."""
        outputs = []
        for start in range(0, len(whitened), self.batch_size):
            chunk = np.ascontiguousarray(whitened[start : start + self.batch_size], dtype=np.float32)
            outputs.append(np.asarray(self.forward(chunk), dtype=np.float32))
        if not outputs:
            return np.zeros((0, EMBEDDING_DIM), dtype=np.float32)
        return np.concatenate(outputs, axis=0)

    def encode(self, crops: npt.NDArray[np.uint8], *, flip_tta: bool | None = None) -> npt.NDArray[np.float32]:
        """Embed aligned RGB uint8 crops of shape (N, 160, 160, 3) -> float32 (N, 128), unit L2 norm."""
        crops = np.asarray(crops)
        if crops.ndim != 4 or crops.shape[1:] != (CROP_SIZE, CROP_SIZE, 3):
            raise ValueError(f"expected (N, {CROP_SIZE}, {CROP_SIZE}, 3) crops, got {crops.shape}")
        whitened = prewhiten(crops)
        use_flip = self.flip_tta if flip_tta is None else flip_tta
        n = len(crops)
        if use_flip and n:
            both = self.raw(np.concatenate([whitened, whitened[:, :, ::-1, :]], axis=0))
            return l2_normalize(both[:n] + both[n:])
        return l2_normalize(self.raw(whitened))


class FaceNetEncoder(BatchedEncoder):
    """The fp32 reference encoder: the Keras model run by a compiled ``tf.function`` (not ``predict``)."""

    precision = "fp32"

    def __init__(self, weights_path: Path, *, batch_size: int = 32, flip_tta: bool = False) -> None:
        tf = import_tensorflow()

        super().__init__(weights_path, batch_size=batch_size, flip_tta=flip_tta)
        self.model = build_model()
        try:
            self.model.load_weights(str(self.weights_path))
        except (OSError, ValueError) as exc:  # truncated or not HDF5 (OSError), another network's (ValueError)
            reason = (str(exc).splitlines() or [type(exc).__name__])[0][:200]  # Keras's can list every layer
            raise WeightsUnavailable(f"cannot load the weights {self.weights_path}: {reason}") from exc
        model = self.model

        @tf.function(
            input_signature=[tf.TensorSpec([None, CROP_SIZE, CROP_SIZE, 3], tf.float32)],
            reduce_retracing=True,
        )
        def forward(x: Any) -> Any:
            return model(x, training=False)

        self._forward = forward

    def forward(self, batch: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        return np.asarray(self._forward(batch), dtype=np.float32)


def l2_normalize(x: npt.NDArray[np.float32], eps: float = 1e-10) -> npt.NDArray[np.float32]:
    """Scale each row of ``x`` to unit L2 norm (rows of zeros stay zero)."""
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return (x / np.maximum(norms, eps)).astype(np.float32)
