"""MTCNN with compiled stages: the ``mtcnn`` package's three networks and weights, run as ``tf.function`` graphs.

The algorithm is the package's (``mtcnn`` 1.0.0, ``MTCNN.detect_faces`` on one image): the same pyramid scales
(``12 / min_face_size * 0.709**k``), TF ``AREA`` resizing, PNet threshold 0.6 with per-scale NMS 0.5 and
cross-scale NMS 0.7 (IoU over union), square-ing, RNet threshold 0.7 with NMS 0.7, ONet threshold 0.8 with NMS 0.7
(IoU over the smaller box), the same box regression and landmark maths, boxes clipped to the image and boxes and
landmarks rounded to whole pixels. What changes is how it runs:

* each stage is one compiled graph call instead of eager Keras layer by layer. PNet runs once per pyramid level
  (resize and network in one graph whose signature takes any level size, so it is traced once; the level is not
  padded, because padding changes PNet's last row and column of cells and with them which faces are found);
* RNet and ONet crop and resize their candidates inside the graph, on batches padded to a few fixed sizes
  (:data:`CANDIDATE_BUCKETS`; padding rows are independent samples, so results do not change);
* NMS (the package's rule, computed over x-overlapping pairs only) and the box maths are vectorised numpy.

:meth:`CompiledMTCNN.detect_refined` is an addition for images detected on a downscaled copy: the faces found
there keep their set and confidences, and ONet re-estimates their boxes and landmarks on crops of the
full-resolution image.

Results match the package's to float rounding (the same faces, boxes and landmarks on every 5-celebrity
validation photo); bench/detect.py measures the agreement on LFW and on multi-face canvases.

Coordinates are pixels of the image given, ``(x1, y1, x2, y2)`` with the package's conventions. Not thread-safe:
callers serialise (see :class:`embeddings.detector.FaceDetector`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

CANDIDATE_BUCKETS = (16, 32, 64, 128, 256, 512, 1024)
"""Candidate batch sizes RNet and ONet run on: a batch is split greedily into these (the last chunk padded)."""

MIN_SIZE = 12
SCALE_FACTOR = 0.709
THRESHOLDS = (0.6, 0.7, 0.8)
NMS_PNET_SCALE, NMS_PNET_ALL, NMS_RNET, NMS_ONET = 0.5, 0.7, 0.7, 0.7
REFINE_ROUNDS, REFINE_SHIFT = 2, 0.05
"""Full-resolution refinement (:meth:`CompiledMTCNN.detect_refined`): rounds, and the crop shift as a share of the
box side. Chosen on bench/detect.py's canvases (seed 0, max side 640): 2 rounds of 9 averaged crops brought the
share of findable faces within IoU 0.9 of the package's boxes from 84% (1 round, 1 crop) to 91% (unrefined: 69%)."""

Array = npt.NDArray[np.float64]


def scale_pyramid(width: int, height: int, min_face_size: float) -> npt.NDArray[np.float64]:
    """The package's pyramid scales (``mtcnn.utils.images.build_scale_pyramid``)."""
    min_dim = min(width, height)
    count = round(-((np.log(min_dim / MIN_SIZE) / np.log(SCALE_FACTOR)) + 1))
    return np.asarray((MIN_SIZE / min_face_size) * SCALE_FACTOR ** np.arange(max(count, 0)), dtype=np.float64)


def suppress(boxes: Array, threshold: float, method: str = "union") -> npt.NDArray[np.intp]:
    """Indices of rows of ``boxes`` (sorted by score, best first; columns x1, y1, x2, y2) that survive NMS.

    The package's rule: a box is dropped when any earlier box (kept or not) overlaps it by more than
    ``threshold`` (IoU over union, or over the smaller area with ``method="min"``); areas have no ``+1``.
    Only pairs whose x ranges overlap are compared (a sweep over boxes sorted by x1), so the cost grows with
    the number of overlapping pairs instead of ``n**2``.
    """
    n = len(boxes)
    if n == 0:
        return np.zeros(0, dtype=np.intp)
    order = np.argsort(boxes[:, 0], kind="stable")
    x1, y1, x2, y2 = (boxes[order, k] for k in range(4))
    area = (x2 - x1) * (y2 - y1)
    dropped = np.zeros(n, dtype=bool)
    active = np.arange(n - 1)
    lag = 1
    while active.size:
        other = active + lag
        inside = other < n
        active, other = active[inside], other[inside]
        # sorted by x1: once box ``other`` starts right of ``active``'s right edge, every later one does too
        overlapping = x1[other] < x2[active]
        active, other = active[overlapping], other[overlapping]
        if not active.size:
            break
        ix = np.maximum(0.0, np.minimum(x2[active], x2[other]) - x1[other])
        iy = np.maximum(0.0, np.minimum(y2[active], y2[other]) - np.maximum(y1[active], y1[other]))
        inter = ix * iy
        union = method == "union"
        denom = area[active] + area[other] - inter if union else np.minimum(area[active], area[other])
        with np.errstate(divide="ignore", invalid="ignore"):
            hit = inter / denom > threshold
        # of an overlapping pair, the later one in score order goes
        dropped[np.maximum(order[active[hit]], order[other[hit]])] = True
        lag += 1
    return np.flatnonzero(~dropped)


def _sorted(rows: Array, column: int) -> Array:
    """Rows by descending ``column`` exactly as the package orders them (reversed stable ascending argsort)."""
    return rows[np.argsort(rows[:, column])[::-1]]


def _square(boxes: Array) -> Array:
    """The package's ``resize_to_square`` on columns 0-3 (x1, y1, x2, y2)."""
    out = boxes.copy()
    w = boxes[:, 2] - boxes[:, 0]
    h = boxes[:, 3] - boxes[:, 1]
    side = np.maximum(w, h)
    out[:, 0] = boxes[:, 0] + w * 0.5 - side * 0.5
    out[:, 1] = boxes[:, 1] + h * 0.5 - side * 0.5
    out[:, 2] = out[:, 0] + side
    out[:, 3] = out[:, 1] + side
    return out


def _regress(boxes: Array, offsets: Array) -> Array:
    """The package's ``adjust_bboxes``: ``offsets * (w + 1, h + 1)`` added to x1, y1, x2, y2."""
    out = boxes.copy()
    w = boxes[:, 2] - boxes[:, 0] + 1
    h = boxes[:, 3] - boxes[:, 1] + 1
    out[:, 0:4] += offsets * np.stack([w, h, w, h], axis=-1)
    return out


def _chunk_size(left: int) -> int:
    """The candidate bucket to run next with ``left`` candidates to go: the one that holds them all when that
    wastes at most a quarter, else the largest that they fill."""
    if left <= CANDIDATE_BUCKETS[0]:
        return CANDIDATE_BUCKETS[0]
    up = next((b for b in CANDIDATE_BUCKETS if b >= left), None)
    if up is not None and up <= left * 1.25:
        return up
    return max(b for b in CANDIDATE_BUCKETS if b <= left)


class CompiledMTCNN:
    """The three MTCNN networks of the ``mtcnn`` package as compiled graphs; :meth:`detect` runs the cascade."""

    def __init__(self) -> None:
        import tensorflow as tf
        from mtcnn.stages import StageONet, StagePNet, StageRNet

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
        self._rnet = make_refine(rnet, 24)
        self._onet = make_refine(onet, 48)
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

    # -- stages ---------------------------------------------------------------------------------------------

    def _pnet(self, image: Any, height: int, width: int, min_face_size: float) -> Array:
        tf = self._tf
        stage: list[Array] = []
        for scale in scale_pyramid(width, height, min_face_size):
            h, w = int(height * scale), int(width * scale)
            if min(h, w) < MIN_SIZE:
                continue
            reg_t, prob_t = self._pnet_level(image, tf.constant([h, w]))
            prob = prob_t.numpy()
            ys, xs = np.nonzero(prob > THRESHOLDS[0])
            if len(ys) == 0:
                continue
            reg = reg_t.numpy()[ys, xs].astype(np.float64)
            score = prob[ys, xs].astype(np.float64)
            # the package's cell: (2 * index + 1) to (2 * index + 12), regression scaled by its side 11
            x1 = xs * 2 + 1 + reg[:, 0] * 11
            y1 = ys * 2 + 1 + reg[:, 1] * 11
            x2 = xs * 2 + 12 + reg[:, 2] * 11
            y2 = ys * 2 + 12 + reg[:, 3] * 11
            boxes = np.stack([x1 / scale, y1 / scale, x2 / scale, y2 / scale, score], axis=1)
            boxes = _sorted(boxes, 4)
            stage.append(boxes[suppress(boxes, NMS_PNET_SCALE)])
        if not stage:
            return np.zeros((0, 5))
        boxes = _sorted(np.concatenate(stage), 4)
        boxes = boxes[suppress(boxes, NMS_PNET_ALL)]
        return _square(boxes)

    def _run_refine(self, fn: Any, image: Any, boxes: Array, height: int, width: int) -> list[npt.NDArray[Any]]:
        """Run RNet or ONet on ``boxes`` (x1, y1, x2, y2 pixels) in fixed-size padded batches."""
        tf = self._tf
        coords = (boxes[:, [1, 0, 3, 2]] / np.asarray([height, width, height, width])).astype(np.float32)
        outs: list[list[npt.NDArray[Any]]] = []
        start = 0
        while start < len(coords):
            left = len(coords) - start
            size = _chunk_size(left)
            part = coords[start : start + size]
            start += len(part)
            padded = np.zeros((size, 4), dtype=np.float32)
            padded[: len(part)] = part
            result = fn(image, tf.constant(padded))
            outs.append([r.numpy()[: len(part)] for r in result])
        return [np.concatenate(parts) for parts in zip(*outs, strict=True)]

    def _onet_stage(self, boxes: Array, offsets: Array, marks: Array, scores: Array) -> Array:
        """The package's ONet output maths for squared input ``boxes`` (x1, y1, x2, y2): rows ``(x1, y1, x2, y2,
        confidence, 5 landmark x, 5 landmark y)``, regressed, not yet thresholded, clipped or rounded."""
        marks = marks.astype(np.float64)
        w = boxes[:, 2:3] - boxes[:, 0:1] + 1
        h = boxes[:, 3:4] - boxes[:, 1:2] + 1
        marks[:, 0:5] = w * marks[:, 0:5] + boxes[:, 0:1] - 1
        marks[:, 5:10] = h * marks[:, 5:10] + boxes[:, 1:2] - 1
        out = np.concatenate([boxes[:, :4], scores[:, -1:].astype(np.float64)], axis=1)
        out = _regress(out, offsets.astype(np.float64))
        return np.concatenate([out, marks], axis=1)

    def _cascade(self, image: npt.NDArray[np.uint8], min_face_size: float) -> tuple[Array, Array]:
        """PNet, RNet and ONet with the package's thresholds and NMS: the unclipped, unrounded rows and, for each,
        the squared box (x1, y1, x2, y2) ONet was run on."""
        tf = self._tf
        height, width = image.shape[:2]
        empty = (np.zeros((0, 15)), np.zeros((0, 4)))
        if min(height, width) < MIN_SIZE:
            return empty
        normalized = tf.constant((image.astype(np.float32) - 127.5) / 128.0)
        boxes = self._pnet(normalized, height, width, min_face_size)
        if len(boxes) == 0:
            return empty

        offsets, scores = self._run_refine(self._rnet, normalized, boxes[:, :4], height, width)
        boxes = boxes.copy()
        boxes[:, 4] = scores[:, -1]
        boxes = _regress(boxes, offsets.astype(np.float64))
        boxes = boxes[boxes[:, 4] > THRESHOLDS[1]]
        boxes = _sorted(boxes, 4)
        boxes = _square(boxes[suppress(boxes, NMS_RNET)])
        if len(boxes) == 0:
            return empty

        offsets, marks, scores = self._run_refine(self._onet, normalized, boxes[:, :4], height, width)
        rows = self._onet_stage(boxes[:, :4], offsets, marks, scores)
        keep = rows[:, 4] > THRESHOLDS[2]
        rows, inputs = rows[keep], boxes[keep, :4]
        order = np.argsort(rows[:, 4])[::-1]  # as _sorted
        rows, inputs = rows[order], inputs[order]
        kept = suppress(rows[:, :4], NMS_ONET, method="min")
        return rows[kept], inputs[kept]

    def detect(self, image: npt.NDArray[np.uint8], min_face_size: float = 20) -> Array:
        """Faces in an RGB uint8 image: rows ``(x1, y1, x2, y2, confidence, 5 landmark x, 5 landmark y)``.

        Boxes are clipped to the image and rounded like the package's JSON output; landmarks are rounded.
        """
        rows, _ = self._cascade(image, min_face_size)
        return _finish(rows, *image.shape[:2])

    def detect_refined(
        self,
        image: npt.NDArray[np.uint8],
        source: npt.NDArray[np.uint8],
        min_face_size: float = 20,
        rounds: int = REFINE_ROUNDS,
        shift: float = REFINE_SHIFT,
    ) -> tuple[Array, Array]:
        """Faces found in ``image``, a downscaled copy of ``source``, with boxes and landmarks re-estimated at
        full resolution: ``(found, refined)``, rows as :meth:`detect`, row ``i`` of both the same face: ``found``
        as :meth:`detect` gives them on ``image`` (``image`` pixels), ``refined`` re-estimated (``source`` pixels).

        The cascade runs on ``image`` and decides which faces there are (``min_face_size`` in ``image`` pixels).
        Then, for each face, ONet runs again on 48x48 crops of ``source``: the squared box ONet saw in ``image``,
        mapped to ``source`` pixels (what the package's ONet stage crops, at full resolution), and that box
        shifted by ``shift`` of its side left/right and up/down (9 crops); the box regressions and landmarks of
        the 9 are averaged. ``rounds`` repeats that around the squared result. The set of faces and their
        confidences are those found in ``image``: refinement never adds or drops a face (callers filter on
        ``found``).
        """
        height, width = source.shape[:2]
        sx, sy = width / image.shape[1], height / image.shape[0]
        rows, inputs = self._cascade(image, min_face_size)
        found = _finish(rows, *image.shape[:2])
        if len(rows) == 0:
            return found, found.copy()
        confidence = rows[:, 4].copy()
        boxes = inputs * np.asarray([sx, sy, sx, sy])
        src = self._tf.constant(np.ascontiguousarray(source, dtype=np.uint8))
        steps = np.asarray([(dx, dy) for dx in (-shift, 0.0, shift) for dy in (-shift, 0.0, shift)])
        for _ in range(max(rounds, 1)):
            side = boxes[:, 2:3] - boxes[:, 0:1]
            crops = np.concatenate([boxes + np.concatenate([side * dx, side * dy] * 2, axis=1) for dx, dy in steps])
            offsets, marks, scores = self._run_refine(self._onet_source, src, crops, height, width)
            rows = self._onet_stage(crops, offsets, marks, scores).reshape(len(steps), len(boxes), 15).mean(axis=0)
            boxes = _square(rows[:, :4])
        rows[:, 4] = confidence
        return found, _finish(rows, height, width)


def _finish(rows: Array, height: int, width: int) -> Array:
    """The package's output: boxes clipped to the image; x, y, width, height and landmarks rounded to whole
    pixels."""
    if len(rows) == 0:
        return np.zeros((0, 15))
    rows = rows.copy()
    rows[:, [0, 2]] = np.clip(rows[:, [0, 2]], 0, width - 1)
    rows[:, [1, 3]] = np.clip(rows[:, [1, 3]], 0, height - 1)
    x1, y1 = rows[:, 0].copy(), rows[:, 1].copy()
    bw, bh = rows[:, 2] - x1, rows[:, 3] - y1
    rows[:, 0], rows[:, 1] = np.round(x1), np.round(y1)
    rows[:, 2], rows[:, 3] = rows[:, 0] + np.round(bw), rows[:, 1] + np.round(bh)
    rows[:, 5:15] = np.round(rows[:, 5:15])
    return rows
