"""The MTCNN cascade of the ``mtcnn`` package (1.0.0, ``MTCNN.detect_faces`` on one image), as pure numpy around
three network calls; the backends (:mod:`embeddings.mtcnn_compiled` on TensorFlow, :mod:`embeddings.mtcnn_openvino`
on OpenVINO) supply only the networks (:class:`Networks`).

The algorithm: the package's pyramid scales (``12 / min_face_size * 0.709**k``), ``AREA`` resizing of the
normalised image ``(x - 127.5) / 128``, PNet threshold 0.6 with per-scale NMS 0.5 and cross-scale NMS 0.7 (IoU
over union), square-ing, RNet threshold 0.7 with NMS 0.7, ONet threshold 0.8 with NMS 0.7 (IoU over the smaller
box), the same box regression and landmark maths, boxes clipped to the image and boxes and landmarks rounded to
whole pixels. RNet and ONet see bilinear 24x24 / 48x48 crops as ``tf.image.crop_and_resize`` makes them
(:func:`crop_and_resize` is that op in numpy; outside pixels are 0 after normalising).

:meth:`Cascade.detect_refined` is an addition for images detected on a downscaled copy: the faces found there
keep their set and confidences, and ONet re-estimates their boxes and landmarks on crops of the full-resolution
image.

Coordinates are pixels of the image given, ``(x1, y1, x2, y2)`` with the package's conventions; result rows are
``(x1, y1, x2, y2, confidence, 5 landmark x, 5 landmark y)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

MIN_SIZE = 12
SCALE_FACTOR = 0.709
THRESHOLDS = (0.6, 0.7, 0.8)
NMS_PNET_SCALE, NMS_PNET_ALL, NMS_RNET, NMS_ONET = 0.5, 0.7, 0.7, 0.7
REFINE_ROUNDS, REFINE_SHIFT = 2, 0.05
"""Full-resolution refinement (:meth:`Cascade.detect_refined`): rounds, and the crop shift as a share of the
box side. Chosen on bench/detect.py's canvases (seed 0, max side 640): 2 rounds of 9 averaged crops brought the
share of findable faces within IoU 0.9 of the package's boxes from 84% (1 round, 1 crop) to 91% (unrefined: 69%)."""
RNET_SIDE, ONET_SIDE = 24, 48
"""The square input sides (pixels) of RNet and ONet."""

Array = npt.NDArray[np.float64]
F32 = npt.NDArray[np.float32]


class Networks(Protocol):
    """The three MTCNN networks as one backend runs them. ``coords`` are float32 ``(n, 4)`` boxes
    ``(y1, x1, y2, x2)`` normalised by ``(height - 1, width - 1)``'s convention of ``tf.image.crop_and_resize``
    (i.e. divided by height and width); ``prepared`` is what :meth:`prepare` returned."""

    def prepare(self, image: npt.NDArray[np.uint8]) -> Any:
        """The normalised image ``(x - 127.5) / 128`` in the backend's own form."""

    def pnet(self, prepared: Any, sizes: Sequence[tuple[int, int]]) -> list[tuple[npt.NDArray[Any], npt.NDArray[Any]]]:
        """PNet on the normalised image area-resized to each ``(height, width)`` of the pyramid: for each level,
        regression ``(h, w, 4)`` and face probability ``(h, w)``."""

    def rnet(self, prepared: Any, coords: F32) -> tuple[npt.NDArray[Any], npt.NDArray[Any]]:
        """RNet on 24x24 crops: box offsets ``(n, 4)`` and class scores ``(n, 2)``."""

    def onet(self, prepared: Any, coords: F32) -> tuple[npt.NDArray[Any], npt.NDArray[Any], npt.NDArray[Any]]:
        """ONet on 48x48 crops: box offsets ``(n, 4)``, landmarks ``(n, 10)`` and class scores ``(n, 2)``."""

    def prepare_source(self, source: npt.NDArray[np.uint8]) -> Any:
        """The full-resolution uint8 image in the backend's own form (for :meth:`onet_source`)."""

    def onet_source(self, source: Any, coords: F32) -> tuple[npt.NDArray[Any], npt.NDArray[Any], npt.NDArray[Any]]:
        """ONet on 48x48 crops of the uint8 source, normalised after cropping (outside pixels 127.5 -> 0)."""


def normalize(image: npt.NDArray[np.uint8]) -> F32:
    """The package's input normalisation, float32 ``(x - 127.5) / 128``."""
    return (image.astype(np.float32) - np.float32(127.5)) / np.float32(128.0)


def scale_pyramid(width: int, height: int, min_face_size: float) -> Array:
    """The package's pyramid scales (``mtcnn.utils.images.build_scale_pyramid``)."""
    min_dim = min(width, height)
    count = round(-((np.log(min_dim / MIN_SIZE) / np.log(SCALE_FACTOR)) + 1))
    return np.asarray((MIN_SIZE / min_face_size) * SCALE_FACTOR ** np.arange(max(count, 0)), dtype=np.float64)


def pyramid_sizes(width: int, height: int, min_face_size: float) -> list[tuple[float, int, int]]:
    """``(scale, level height, level width)`` of every pyramid level PNet runs on (levels under 12 px skipped)."""
    out = []
    for scale in scale_pyramid(width, height, min_face_size):
        h, w = int(height * scale), int(width * scale)
        if min(h, w) >= MIN_SIZE:
            out.append((float(scale), h, w))
    return out


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


def sorted_rows(rows: Array, column: int) -> Array:
    """Rows by descending ``column`` exactly as the package orders them (reversed stable ascending argsort)."""
    return rows[np.argsort(rows[:, column])[::-1]]


def square(boxes: Array) -> Array:
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


def regress(boxes: Array, offsets: Array) -> Array:
    """The package's ``adjust_bboxes``: ``offsets * (w + 1, h + 1)`` added to x1, y1, x2, y2."""
    out = boxes.copy()
    w = boxes[:, 2] - boxes[:, 0] + 1
    h = boxes[:, 3] - boxes[:, 1] + 1
    out[:, 0:4] += offsets * np.stack([w, h, w, h], axis=-1)
    return out


def to_coords(boxes: Array, height: int, width: int) -> F32:
    """Pixel boxes ``(x1, y1, x2, y2)`` -> ``crop_and_resize`` boxes ``(y1, x1, y2, x2)`` divided by the size."""
    return (boxes[:, [1, 0, 3, 2]] / np.asarray([height, width, height, width])).astype(np.float32)


def crop_and_resize(image: npt.NDArray[Any], coords: F32, side: int, extrapolation: float = 0.0) -> F32:
    """``tf.image.crop_and_resize(image[None], coords, zeros, (side, side), "bilinear", extrapolation)`` in numpy:
    float32 ``(n, side, side, channels)``. Sample ``i`` of a box lies at ``y1 * (H - 1) + i * (y2 - y1) * (H - 1) /
    (side - 1)`` (x alike); samples outside ``[0, H - 1]`` take ``extrapolation``; interpolation in float32."""
    height, width = image.shape[:2]
    n = len(coords)
    if n == 0:
        return np.zeros((0, side, side, image.shape[2]), np.float32)
    steps = np.arange(side, dtype=np.float32)
    c = coords.astype(np.float32)
    hs = (c[:, 2] - c[:, 0]) * np.float32(height - 1) / np.float32(side - 1)
    ws = (c[:, 3] - c[:, 1]) * np.float32(width - 1) / np.float32(side - 1)
    ys = c[:, 0:1] * np.float32(height - 1) + steps[None, :] * hs[:, None]  # (n, side)
    xs = c[:, 1:2] * np.float32(width - 1) + steps[None, :] * ws[:, None]
    y_ok = (ys >= 0) & (ys <= height - 1)
    x_ok = (xs >= 0) & (xs <= width - 1)
    floor_y, floor_x = np.floor(ys), np.floor(xs)
    top = np.clip(floor_y, 0, height - 1).astype(np.intp)
    bottom = np.clip(np.ceil(ys), 0, height - 1).astype(np.intp)
    left = np.clip(floor_x, 0, width - 1).astype(np.intp)
    right = np.clip(np.ceil(xs), 0, width - 1).astype(np.intp)
    # gathers from the image as (pixels, channels) by flat index: ~2x faster than 2-d fancy indexing
    flat = np.ascontiguousarray(image).reshape(height * width, image.shape[2])
    rows_t, rows_b = (top * width)[:, :, None], (bottom * width)[:, :, None]
    cols_l, cols_r = left[:, None, :], right[:, None, :]
    x_lerp = (xs - floor_x).astype(np.float32)[:, None, :, None]
    y_lerp = (ys - floor_y).astype(np.float32)[:, :, None, None]
    tl = flat.take(rows_t + cols_l, axis=0).astype(np.float32, copy=False)
    tr = flat.take(rows_t + cols_r, axis=0).astype(np.float32, copy=False)
    upper = tl + (tr - tl) * x_lerp
    bl = flat.take(rows_b + cols_l, axis=0).astype(np.float32, copy=False)
    br = flat.take(rows_b + cols_r, axis=0).astype(np.float32, copy=False)
    out = upper + (bl + (br - bl) * x_lerp - upper) * y_lerp
    inside = y_ok[:, :, None] & x_ok[:, None, :]
    if not inside.all():
        out[~inside] = np.float32(extrapolation)
    return out


def pnet_boxes(reg: npt.NDArray[Any], prob: npt.NDArray[Any], scale: float) -> Array:
    """One pyramid level's candidates above PNet's threshold, in source pixels, after the per-scale NMS: rows
    ``(x1, y1, x2, y2, score)`` by descending score."""
    ys, xs = np.nonzero(prob > THRESHOLDS[0])
    if len(ys) == 0:
        return np.zeros((0, 5))
    offsets = reg[ys, xs].astype(np.float64)
    score = prob[ys, xs].astype(np.float64)
    # the package's cell: (2 * index + 1) to (2 * index + 12), regression scaled by its side 11
    x1 = xs * 2 + 1 + offsets[:, 0] * 11
    y1 = ys * 2 + 1 + offsets[:, 1] * 11
    x2 = xs * 2 + 12 + offsets[:, 2] * 11
    y2 = ys * 2 + 12 + offsets[:, 3] * 11
    boxes = sorted_rows(np.stack([x1 / scale, y1 / scale, x2 / scale, y2 / scale, score], axis=1), 4)
    return boxes[suppress(boxes, NMS_PNET_SCALE)]


def merge_levels(levels: list[Array]) -> Array:
    """The cross-scale NMS and square-ing of PNet's per-level candidates."""
    if not levels:
        return np.zeros((0, 5))
    boxes = sorted_rows(np.concatenate(levels), 4)
    return square(boxes[suppress(boxes, NMS_PNET_ALL)])


def after_rnet(boxes: Array, offsets: npt.NDArray[Any], scores: npt.NDArray[Any]) -> Array:
    """RNet's maths on PNet's squared candidates: regress, threshold, NMS, square."""
    boxes = boxes.copy()
    boxes[:, 4] = scores[:, -1]
    boxes = regress(boxes, offsets.astype(np.float64))
    boxes = sorted_rows(boxes[boxes[:, 4] > THRESHOLDS[1]], 4)
    return square(boxes[suppress(boxes, NMS_RNET)])


def onet_rows(boxes: Array, offsets: npt.NDArray[Any], marks: npt.NDArray[Any], scores: npt.NDArray[Any]) -> Array:
    """The package's ONet output maths for squared input ``boxes`` (x1, y1, x2, y2): rows ``(x1, y1, x2, y2,
    confidence, 5 landmark x, 5 landmark y)``, regressed, not yet thresholded, clipped or rounded."""
    marks = marks.astype(np.float64)
    w = boxes[:, 2:3] - boxes[:, 0:1] + 1
    h = boxes[:, 3:4] - boxes[:, 1:2] + 1
    marks[:, 0:5] = w * marks[:, 0:5] + boxes[:, 0:1] - 1
    marks[:, 5:10] = h * marks[:, 5:10] + boxes[:, 1:2] - 1
    out = np.concatenate([boxes[:, :4], scores[:, -1:].astype(np.float64)], axis=1)
    out = regress(out, offsets.astype(np.float64))
    return np.concatenate([out, marks], axis=1)


def after_onet(rows: Array, inputs: Array) -> tuple[Array, Array]:
    """ONet's threshold and NMS (over the smaller box) on :func:`onet_rows`, keeping each row's input box."""
    keep = rows[:, 4] > THRESHOLDS[2]
    rows, inputs = rows[keep], inputs[keep]
    order = np.argsort(rows[:, 4])[::-1]  # as sorted_rows
    rows, inputs = rows[order], inputs[order]
    kept = suppress(rows[:, :4], NMS_ONET, method="min")
    return rows[kept], inputs[kept]


def finish(rows: Array, height: int, width: int) -> Array:
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


def refine_crops(boxes: Array, shift: float) -> tuple[Array, int]:
    """The 9 crops of :meth:`Cascade.detect_refined` for squared ``boxes``: each shifted by ``shift`` of its side
    left/right and up/down (rows grouped by shift), and the number of shifts."""
    steps = [(dx, dy) for dx in (-shift, 0.0, shift) for dy in (-shift, 0.0, shift)]
    side = boxes[:, 2:3] - boxes[:, 0:1]
    crops = np.concatenate([boxes + np.concatenate([side * dx, side * dy] * 2, axis=1) for dx, dy in steps])
    return crops, len(steps)


class Cascade:
    """PNet, RNet and ONet of a :class:`Networks` backend run as the package runs them. Not thread-safe unless
    the networks are (see the backends)."""

    def __init__(self, networks: Networks) -> None:
        self.networks = networks

    def _cascade(self, image: npt.NDArray[np.uint8], min_face_size: float) -> tuple[Array, Array]:
        """The unclipped, unrounded ONet rows and, for each, the squared box (x1, y1, x2, y2) ONet was run on."""
        nets = self.networks
        height, width = image.shape[:2]
        empty = (np.zeros((0, 15)), np.zeros((0, 4)))
        if min(height, width) < MIN_SIZE:
            return empty
        prepared = nets.prepare(image)
        pyramid = pyramid_sizes(width, height, min_face_size)
        outputs = nets.pnet(prepared, [(h, w) for _, h, w in pyramid]) if pyramid else []
        levels = [
            pnet_boxes(np.asarray(reg), np.asarray(prob), scale)
            for (scale, _, _), (reg, prob) in zip(pyramid, outputs, strict=True)
        ]
        boxes = merge_levels(levels)
        if len(boxes) == 0:
            return empty
        offsets, scores = nets.rnet(prepared, to_coords(boxes[:, :4], height, width))
        boxes = after_rnet(boxes, offsets, scores)
        if len(boxes) == 0:
            return empty
        offsets, marks, scores = nets.onet(prepared, to_coords(boxes[:, :4], height, width))
        return after_onet(onet_rows(boxes[:, :4], offsets, marks, scores), boxes[:, :4])

    def detect(self, image: npt.NDArray[np.uint8], min_face_size: float = 20) -> Array:
        """Faces in an RGB uint8 image: rows ``(x1, y1, x2, y2, confidence, 5 landmark x, 5 landmark y)``.

        Boxes are clipped to the image and rounded like the package's JSON output; landmarks are rounded.
        """
        rows, _ = self._cascade(image, min_face_size)
        return finish(rows, *image.shape[:2])

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
        found = finish(rows, *image.shape[:2])
        if len(rows) == 0:
            return found, found.copy()
        confidence = rows[:, 4].copy()
        boxes = inputs * np.asarray([sx, sy, sx, sy])
        src = self.networks.prepare_source(np.ascontiguousarray(source, dtype=np.uint8))
        for _ in range(max(rounds, 1)):
            crops, shifts = refine_crops(boxes, shift)
            offsets, marks, scores = self.networks.onet_source(src, to_coords(crops, height, width))
            rows = onet_rows(crops, offsets, marks, scores).reshape(shifts, len(boxes), 15).mean(axis=0)
            boxes = square(rows[:, :4])
        rows[:, 4] = confidence
        return found, finish(rows, height, width)
