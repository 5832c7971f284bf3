"""Face detection with MTCNN: boxes, five landmarks and a confidence per face.

Three backends run the same networks, weights and algorithm (:mod:`embeddings.mtcnn_algorithm`):
``"openvino"`` (the default, and the server's: :mod:`embeddings.mtcnn_openvino`, no TensorFlow; concurrent
detections share network calls), ``"compiled"`` (:class:`embeddings.mtcnn_compiled.CompiledMTCNN`, the networks as
TensorFlow graphs) and ``"package"`` (the ``mtcnn`` package's eager ``detect_faces``, the reference the others are
checked against). The last two need the ``convert`` extra (TensorFlow).

Boxes and landmarks are returned in pixels of the image given (which :func:`embeddings.images.decode_image`
has already made upright). ``min_face_size`` is the shorter box side in those source pixels.

Large images are detected on a copy whose longer side is at most ``max_side`` pixels (area-downscaled), and the
boxes and landmarks are mapped back to source pixels: MTCNN's cost grows with the pixel count of its first pyramid
level, and a 40 MP upload must not cost seconds of CPU. The smallest face found in a downscaled image is then
``max(min_face_size, 12 / scale)`` source pixels (see :meth:`FaceDetector.smallest_face`): with the default
``max_side`` of 640, 24 px on a 1280 px photo, 36 px on a 1920x1080 photo and 75 px on a 4000 px photo; images
up to 640 px are detected as they are. Alignment always crops from the full-resolution image.

Boxes and landmarks found on a downscaled copy are coarse (a pixel there is several source pixels, and ONet saw
an upscaled low-resolution crop). With ``refine`` (the default), when the copy is smaller than
:data:`REFINE_BELOW_SCALE` of the source, the openvino and compiled backends re-run ONet on 48x48 crops of the
full-resolution image (one small batch per round) and take its boxes and landmarks
(:meth:`embeddings.mtcnn_algorithm.Cascade.detect_refined`); which faces are found and kept (the confidence
and ``min_face_size`` filters), and their confidences, stay those of the downscaled copy.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal, TypeVar

import cv2
import numpy as np
import numpy.typing as npt

from embeddings.tf_quiet import import_tensorflow
from embeddings.types import Box, Detection, Landmarks

_T = TypeVar("_T")

MTCNN_MIN_INPUT = 12
"""The smallest image side MTCNN's first network accepts, pixels."""

DEFAULT_MAX_SIDE = 640
"""Longer side, pixels, above which detection runs on a downscaled copy. 640: a 1080p photo with one face in
43-66 ms p50 instead of 98-170 ms at 1280 (compiled; the full-resolution refinement adds 3-19 ms), smallest
face 36 px instead of 20 px on 1920x1080; on 1280x960 multi-face photos the refined boxes have mean IoU 0.946 with
the package's on the full image (0.909 unrefined; 960 px, unrefined there: 0.950). Figures and the trade:
docs/BENCHMARKS.md, "Detection"."""

REFINE_BELOW_SCALE = 0.7
"""Full-resolution refinement runs when the detected copy is smaller than this fraction of the source (a source
at least ~1.43x ``max_side``). On bench/detect.py's 1280x960 canvases it improved the boxes in every face-size
bucket at scales 0.5 and 0.625 (640 and 800 px), but at 0.75 (960 px), where the copy is close to the source,
it lowered the mean IoU with the package from 0.950 to 0.936 (better on 20-32 px faces, worse on the rest)."""

Backend = Literal["openvino", "compiled", "package"]
BACKENDS: tuple[Backend, ...] = ("openvino", "compiled", "package")
DEFAULT_BACKEND: Backend = "openvino"


def _to_detection(raw: dict[str, Any], scale: float = 1.0) -> Detection:
    """Convert one ``mtcnn`` result, found on an image resized by ``scale``, to source pixels."""
    x, y, w, h = (float(v) / scale for v in raw["box"])
    kp = raw["keypoints"]

    def point(name: str) -> tuple[float, float]:
        px, py = kp[name]
        return (float(px) / scale, float(py) / scale)

    return Detection(
        box=Box(x, y, w, h),
        landmarks=Landmarks(
            left_eye=point("left_eye"),
            right_eye=point("right_eye"),
            nose=point("nose"),
            mouth_left=point("mouth_left"),
            mouth_right=point("mouth_right"),
        ),
        confidence=float(raw["confidence"]),
    )


def _row_to_detection(row: npt.NDArray[np.float64], scale: float = 1.0) -> Detection:
    """Convert one :meth:`embeddings.mtcnn_algorithm.Cascade.detect` row, found on an image resized by ``scale``,
    to source pixels."""
    x1, y1, x2, y2 = (float(v) / scale for v in row[:4])
    xs = [float(v) / scale for v in row[5:10]]
    ys = [float(v) / scale for v in row[10:15]]
    return Detection(
        box=Box(x1, y1, x2 - x1, y2 - y1),
        landmarks=Landmarks(
            left_eye=(xs[0], ys[0]),
            right_eye=(xs[1], ys[1]),
            nose=(xs[2], ys[2]),
            mouth_left=(xs[3], ys[3]),
            mouth_right=(xs[4], ys[4]),
        ),
        confidence=float(row[4]),
    )


class FaceDetector:
    """MTCNN wrapper. Thread-safe: with ``openvino`` detections run concurrently in the callers' threads and share
    network calls (:class:`embeddings.call_batcher.CallBatcher`; a full queue raises
    :class:`embeddings.errors.Overloaded`); the TensorFlow backends run one detection at a time on one worker
    thread (their networks are not re-entrant).

    ``min_confidence`` in [0, 1] drops weaker detections; ``min_face_size`` (source pixels) is both the
    pyramid's smallest face and a filter on the result. ``refine`` (openvino and compiled backends, downscaled
    images only): boxes and landmarks re-estimated on the full-resolution image (module docstring).
    ``cache_root``: where the openvino backend finds (or writes) its converted networks (default: the weights
    cache, :func:`embeddings.weights.cache_dir`); ``precision``: the openvino networks' inference precision
    (:data:`embeddings.mtcnn_openvino.PRECISIONS`; default theirs).
    """

    def __init__(
        self,
        *,
        min_confidence: float = 0.8,
        min_face_size: int = 20,
        max_side: int = DEFAULT_MAX_SIDE,
        backend: Backend = DEFAULT_BACKEND,
        refine: bool = True,
        cache_root: Path | None = None,
        precision: str | None = None,
    ) -> None:
        if backend not in BACKENDS:
            raise ValueError(f"unknown detector backend {backend!r}")
        self.min_confidence = min_confidence
        self.min_face_size = max(int(min_face_size), MTCNN_MIN_INPUT)
        self.max_side = max(int(max_side), 64)
        self.backend: Backend = backend
        self.refine = refine
        self._mtcnn: Any = None
        self._compiled: Any = None
        self._worker: ThreadPoolExecutor | None = None
        if backend == "openvino":
            from embeddings.mtcnn_algorithm import Cascade
            from embeddings.mtcnn_openvino import DEFAULT_PRECISION, OpenVinoNetworks

            # thread-safe: cascades run in the callers' threads, network calls are shared and serialised
            self._compiled = Cascade(OpenVinoNetworks(cache_root, precision=precision or DEFAULT_PRECISION))
            return
        if backend == "package":
            import_tensorflow()
            from mtcnn import MTCNN

            self._mtcnn = MTCNN(device="CPU:0")
        else:
            from embeddings.mtcnn_compiled import CompiledMTCNN

            self._compiled = CompiledMTCNN()
            self._compiled.warm_up()
        # TensorFlow backends: one long-lived thread runs every network call: TensorFlow/oneDNN keep kernel and
        # primitive caches per calling thread, so detection from dozens of request threads grew the service's
        # memory per thread. One worker also serialises the calls (the networks are not re-entrant).
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="facerec-detector")

    @property
    def call_batcher(self) -> Any:
        """The :class:`embeddings.call_batcher.CallBatcher` that shares network calls (openvino), else None."""
        networks = getattr(self._compiled, "networks", None)
        return getattr(networks, "batcher", None)

    def _run(self, fn: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
        """Call ``fn`` in the detector's worker thread (TensorFlow backends) or in the caller's (openvino)."""
        if self._worker is None:
            return fn(*args, **kwargs)
        return self._worker.submit(fn, *args, **kwargs).result()

    def _scaled(self, image: npt.NDArray[np.uint8]) -> tuple[npt.NDArray[np.uint8], float]:
        """The image to run MTCNN on and its scale relative to the source (1.0 = unchanged)."""
        longest = max(image.shape[:2])
        if longest <= self.max_side:
            return image, 1.0
        scale = self.max_side / longest
        size = (max(round(image.shape[1] * scale), 1), max(round(image.shape[0] * scale), 1))
        small = np.asarray(cv2.resize(image, size, interpolation=cv2.INTER_AREA), dtype=np.uint8)
        return small, scale

    def smallest_face(self, shape: tuple[int, ...]) -> float:
        """The smallest face side, source pixels, that :meth:`detect` can find in an image of ``shape``."""
        longest = max(shape[:2])
        scale = min(1.0, self.max_side / longest) if longest else 1.0
        return max(float(self.min_face_size), MTCNN_MIN_INPUT / scale)

    def _pyramid_min_face(self, scale: float) -> int:
        return max(round(self.min_face_size * scale), MTCNN_MIN_INPUT)

    def _passes(self, d: Detection) -> bool:
        return d.confidence >= self.min_confidence and min(d.box.width, d.box.height) >= self.min_face_size * 0.8

    def _keep(self, detections: list[Detection]) -> list[Detection]:
        return sorted(filter(self._passes, detections), key=lambda d: d.box.area, reverse=True)

    def _keep_pairs(self, pairs: list[tuple[Detection, Detection]]) -> list[Detection]:
        """The second of each ``(as found, refined)`` pair whose first passes the filters."""
        return [refined for found, refined in pairs if self._passes(found)]

    def detect(self, image: npt.NDArray[np.uint8]) -> list[Detection]:
        """Detect faces in an RGB uint8 image; largest first. An image with no face gives ``[]``."""
        if image.ndim != 3 or min(image.shape[:2]) < MTCNN_MIN_INPUT:
            return []
        small, scale = self._scaled(image)
        if min(small.shape[:2]) < MTCNN_MIN_INPUT:
            return []
        min_face = self._pyramid_min_face(scale)
        if self._compiled is not None and self.refine and scale < REFINE_BELOW_SCALE:
            found, refined = self._run(self._compiled.detect_refined, small, image, min_face_size=min_face)
            # which faces are kept is decided on the boxes as found, so refinement adds or drops none
            pairs = [(_row_to_detection(f, scale), _row_to_detection(r)) for f, r in zip(found, refined, strict=True)]
            kept = self._keep_pairs(pairs)
            return sorted(kept, key=lambda d: d.box.area, reverse=True)
        if self._compiled is not None:
            rows = self._run(self._compiled.detect, small, min_face_size=min_face)
            return self._keep([_row_to_detection(r, scale) for r in rows])
        raw = self._run(self._mtcnn.detect_faces, small, min_face_size=min_face)
        return self._keep([_to_detection(r, scale) for r in raw])

    def detect_batch(self, images: Sequence[npt.NDArray[np.uint8]]) -> list[list[Detection]]:
        """Detect faces in several images: one package pass when they share a size; the openvino and compiled
        backends detect them one by one (their per-image cost has no eager overhead to amortise)."""
        if not images:
            return []
        if self._compiled is not None or any(
            img.ndim != 3 or min(img.shape[:2]) < MTCNN_MIN_INPUT or max(img.shape[:2]) > self.max_side
            for img in images
        ):
            return [self.detect(img) for img in images]
        raw = self._run(self._mtcnn.detect_faces, list(images), min_face_size=self.min_face_size)
        return [self._keep([_to_detection(r) for r in per_image]) for per_image in raw]


def pick_primary(detections: Sequence[Detection], image_shape: tuple[int, ...]) -> Detection | None:
    """The face an image is "of": the largest box, penalised by its distance from the image centre.

    Same rule as FaceNet's ``align_dataset_mtcnn``: ``area - 2 * squared_offset``.
    """
    if not detections:
        return None
    height, width = image_shape[:2]

    def score(d: Detection) -> float:
        cx, cy = d.box.x + d.box.width / 2.0, d.box.y + d.box.height / 2.0
        offset = math.hypot(cx - width / 2.0, cy - height / 2.0)
        return d.box.area - 2.0 * offset * offset

    return max(detections, key=score)
