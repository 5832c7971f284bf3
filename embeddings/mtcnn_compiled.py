"""MTCNN with compiled stages: the ``mtcnn`` package's three networks and weights, run as ``tf.function`` graphs.

The algorithm is the package's, shared with the OpenVINO backend in :mod:`embeddings.mtcnn_algorithm`. What this
backend changes is how the networks run:

* each stage is one compiled graph call instead of eager Keras layer by layer. PNet runs once per pyramid level
  (resize and network in one graph whose signature takes any level size, so it is traced once; the level is not
  padded, because padding changes PNet's last row and column of cells and with them which faces are found);
* RNet and ONet crop and resize their candidates inside the graph, on batches padded to a few fixed sizes
  (:data:`CANDIDATE_BUCKETS`; padding rows are independent samples, so results do not change).

Results match the package's to float rounding (the same faces, boxes and landmarks on every 5-celebrity
validation photo); bench/detect.py measures the agreement on LFW and on multi-face canvases.

Needs TensorFlow (the ``convert`` extra); the server uses :mod:`embeddings.mtcnn_openvino`. Not thread-safe:
callers serialise (see :class:`embeddings.detector.FaceDetector`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from embeddings.mtcnn_algorithm import ONET_SIDE, RNET_SIDE, Cascade
from embeddings.tf_quiet import import_tensorflow

CANDIDATE_BUCKETS = (16, 32, 64, 128, 256, 512, 1024)
"""Candidate batch sizes RNet and ONet run on: a batch is split greedily into these (the last chunk padded)."""


def _chunk_size(left: int) -> int:
    """The candidate bucket to run next with ``left`` candidates to go: the one that holds them all when that
    wastes at most a quarter, else the largest that they fill."""
    if left <= CANDIDATE_BUCKETS[0]:
        return CANDIDATE_BUCKETS[0]
    up = next((b for b in CANDIDATE_BUCKETS if b >= left), None)
    if up is not None and up <= left * 1.25:
        return up
    return max(b for b in CANDIDATE_BUCKETS if b <= left)


class CompiledMTCNN(Cascade):
    """The three MTCNN networks of the ``mtcnn`` package as compiled graphs (the :class:`Networks` of its own
    :class:`Cascade`); :meth:`detect` runs the cascade."""

    def __init__(self) -> None:
        tf = import_tensorflow()
        from mtcnn.stages import StageONet, StagePNet, StageRNet

        super().__init__(self)
        self._tf = tf
        with tf.device("CPU:0"):
            pnet, rnet, onet = StagePNet().model, StageRNet().model, StageONet().model
        self._nets = (pnet, rnet, onet)

        @tf.function(
            input_signature=[tf.TensorSpec([None, None, 3], tf.float32), tf.TensorSpec([2], tf.int32)],
            reduce_retracing=True,
        )
        def pnet_level(image: Any, size: Any) -> Any:
            level = tf.image.resize(image[None], size, method=tf.image.ResizeMethod.AREA)
            reg, prob = pnet(level)
            return reg[0], prob[0, :, :, 1]

        def make_refine(net: Any, side: int) -> Any:
            @tf.function(
                input_signature=[tf.TensorSpec([None, None, 3], tf.float32), tf.TensorSpec([None, 4], tf.float32)],
                reduce_retracing=True,
            )
            def refine(image: Any, boxes: Any) -> Any:
                index = tf.zeros(tf.shape(boxes)[:1], dtype=tf.int32)
                patches = tf.image.crop_and_resize(image[None], boxes, index, (side, side))
                return net(patches)

            return refine

        @tf.function(
            input_signature=[tf.TensorSpec([None, None, 3], tf.uint8), tf.TensorSpec([None, 4], tf.float32)],
            reduce_retracing=True,
        )
        def onet_source(image: Any, boxes: Any) -> Any:
            # ONet on crops of the raw uint8 image, normalised after the (linear) bilinear crop: the same patches
            # as cropping the normalised image, where outside pixels are 0, i.e. 127.5 before normalising. Saves
            # normalising every pixel of a large source image for a handful of crops.
            index = tf.zeros(tf.shape(boxes)[:1], dtype=tf.int32)
            patches = tf.image.crop_and_resize(image[None], boxes, index, (48, 48), extrapolation_value=127.5)
            return onet((patches - 127.5) / 128.0)

        self._pnet_level = pnet_level
        self._rnet = make_refine(rnet, RNET_SIDE)
        self._onet = make_refine(onet, ONET_SIDE)
        self._onet_source = onet_source

    def warm_up(self) -> None:
        """Trace the three graphs and run the small candidate buckets once (about a second), so that the first
        image with faces pays no tracing cost."""
        tf = self._tf
        image = tf.zeros([48, 48, 3], tf.float32)
        self._pnet_level(image, tf.constant([24, 24]))
        for size in CANDIDATE_BUCKETS[:3]:
            boxes = tf.constant(np.tile(np.asarray([[0.0, 0.0, 1.0, 1.0]], dtype=np.float32), (size, 1)))
            self._rnet(image, boxes)
            self._onet(image, boxes)
            self._onet_source(tf.zeros([48, 48, 3], tf.uint8), boxes)

    # -- the Networks protocol ------------------------------------------------------------------------------

    def prepare(self, image: npt.NDArray[np.uint8]) -> Any:
        return self._tf.constant((image.astype(np.float32) - 127.5) / 128.0)

    def prepare_source(self, source: npt.NDArray[np.uint8]) -> Any:
        return self._tf.constant(source)

    def pnet(self, prepared: Any, sizes: Sequence[tuple[int, int]]) -> list[tuple[npt.NDArray[Any], npt.NDArray[Any]]]:
        out = []
        for height, width in sizes:
            reg, prob = self._pnet_level(prepared, self._tf.constant([height, width]))
            out.append((reg.numpy(), prob.numpy()))
        return out

    def rnet(self, prepared: Any, coords: npt.NDArray[np.float32]) -> tuple[npt.NDArray[Any], npt.NDArray[Any]]:
        offsets, scores = self._run_padded(self._rnet, prepared, coords)
        return offsets, scores

    def onet(
        self, prepared: Any, coords: npt.NDArray[np.float32]
    ) -> tuple[npt.NDArray[Any], npt.NDArray[Any], npt.NDArray[Any]]:
        offsets, marks, scores = self._run_padded(self._onet, prepared, coords)
        return offsets, marks, scores

    def onet_source(
        self, source: Any, coords: npt.NDArray[np.float32]
    ) -> tuple[npt.NDArray[Any], npt.NDArray[Any], npt.NDArray[Any]]:
        offsets, marks, scores = self._run_padded(self._onet_source, source, coords)
        return offsets, marks, scores

    def _run_padded(self, fn: Any, image: Any, coords: npt.NDArray[np.float32]) -> list[npt.NDArray[Any]]:
        """Run a refine graph on ``coords`` in fixed-size padded batches (:data:`CANDIDATE_BUCKETS`)."""
        outs: list[list[npt.NDArray[Any]]] = []
        start = 0
        while start < len(coords):
            size = _chunk_size(len(coords) - start)
            part = coords[start : start + size]
            start += len(part)
            padded = np.zeros((size, 4), dtype=np.float32)
            padded[: len(part)] = part
            result = fn(image, self._tf.constant(padded))
            outs.append([r.numpy()[: len(part)] for r in result])
        return [np.concatenate(parts) for parts in zip(*outs, strict=True)]
