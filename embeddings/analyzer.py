"""``FaceAnalyzer``: load the detector and encoder once, then detect, align, assess and embed faces in images."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt

from embeddings import weights as weights_mod
from embeddings.align import CROP_SIZE, DEFAULT_MARGIN, align_face, resize_aligned
from embeddings.detector import DEFAULT_MAX_SIDE, FaceDetector
from embeddings.distance import distance, similarity
from embeddings.encoders import DEFAULT_PRECISION, PRECISIONS, Encoder, create_encoder
from embeddings.errors import BadPose, InvalidImage, LowQuality, MultipleFaces, NoFace
from embeddings.images import DEFAULT_MAX_PIXELS, decode_image
from embeddings.model_card import default_threshold
from embeddings.padding import DEFAULT_PAD, detect_with_padding
from embeddings.quality import BLURRY, FACE_TOO_SMALL, POSE, QualityThresholds, assess, sharpness
from embeddings.types import Box, Detection, Face, Landmarks, Quality

ImageInput = bytes | npt.NDArray[np.uint8]
"""Raw encoded bytes (decoded with EXIF orientation) or an already-upright RGB uint8 array (H, W, 3)."""


@dataclass(frozen=True, slots=True)
class AnalyzerConfig:
    """Pipeline settings. ``margin`` is a fraction of the box; ``rotate`` levels the eyes; ``flip_tta`` averages
    each face with its mirror image; ``min_detection_confidence`` / ``min_face_size`` filter detections (source
    pixels); ``detect_max_side`` is the longer side (px) above which detection runs on a downscaled copy;
    ``quality`` holds the enrolment minimums; ``max_pixels`` limits decoded images; ``encoder`` is the encoder
    precision (``fp32``, ``bf16`` or ``int8``, see :mod:`embeddings.encoders`); ``detect_pad``: when no face is
    found, detect again on a copy padded by this fraction of the longer side with a mid-grey border (faces that
    fill the frame, :mod:`embeddings.padding`; 0 = off)."""

    margin: float = DEFAULT_MARGIN
    rotate: bool = True
    flip_tta: bool = True
    min_detection_confidence: float = 0.8
    min_face_size: int = 20
    detect_max_side: int = DEFAULT_MAX_SIDE
    quality: QualityThresholds = field(default_factory=QualityThresholds)
    max_pixels: int = DEFAULT_MAX_PIXELS
    batch_size: int = 32
    encoder: str = DEFAULT_PRECISION
    detect_pad: float = DEFAULT_PAD

    def __post_init__(self) -> None:
        if self.encoder not in PRECISIONS:
            raise ValueError(f"encoder must be one of {', '.join(PRECISIONS)}; got {self.encoder!r}")


@dataclass(frozen=True, slots=True)
class Verification:
    """Result of comparing two faces: L2 ``distance`` in [0, 2], cosine ``similarity`` in [-1, 1], and ``match``
    (``distance <= threshold``)."""

    distance: float
    similarity: float
    threshold: float
    match: bool


class FaceAnalyzer:
    """Loads MTCNN and FaceNet once; every method is safe to call from several threads."""

    def __init__(
        self,
        config: AnalyzerConfig | None = None,
        *,
        weights_path: str | Path | None = None,
        model_id: str = weights_mod.MODEL_ID,
        threshold: float | None = None,
    ) -> None:
        self.config = config or AnalyzerConfig()
        self.model_id = model_id
        self.threshold = default_threshold() if threshold is None else threshold
        path = weights_mod.resolve(weights_path)
        self.detector = FaceDetector(
            min_confidence=self.config.min_detection_confidence,
            min_face_size=self.config.min_face_size,
            max_side=self.config.detect_max_side,
        )
        self.encoder: Encoder = create_encoder(
            path, self.config.encoder, batch_size=self.config.batch_size, flip_tta=self.config.flip_tta
        )
        """Any :class:`Encoder`; a service may hand in a wrapper of this one (its shared micro-batcher)."""

    def warm_up(self) -> None:
        """Run each network once so that the first request pays no tracing cost."""
        self.encoder.warm_up()
        blank = np.full((64, 64, 3), 128, dtype=np.uint8)
        self.detector.detect(blank)

    def load_image(self, image: ImageInput) -> npt.NDArray[np.uint8]:
        """Decode bytes (see :func:`decode_image`) or pass an RGB array through."""
        if isinstance(image, bytes | bytearray | memoryview):
            return decode_image(bytes(image), max_pixels=self.config.max_pixels)
        return np.asarray(image, dtype=np.uint8)

    def detect(self, image: ImageInput) -> list[Detection]:
        """All faces in the image, largest first, boxes and landmarks in upright-image pixels; when none is found,
        those found on a padded copy (faces that fill the frame, :func:`embeddings.padding.detect_with_padding`)."""
        return detect_with_padding(self.detector, self.load_image(image), pad=self.config.detect_pad)

    def align(self, image: npt.NDArray[np.uint8], detection: Detection) -> npt.NDArray[np.uint8]:
        """The 160x160 RGB crop of one detection, with this analyzer's margin and rotation."""
        return align_face(image, detection, margin=self.config.margin, rotate=self.config.rotate, size=CROP_SIZE)

    def encode(self, crops: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
        """Aligned crops (N, 160, 160, 3) uint8 -> unit embeddings (N, 128) float32."""
        return self.encoder.encode(crops)

    def faces_from_detections(self, image: npt.NDArray[np.uint8], detections: list[Detection]) -> list[Face]:
        """Align, assess and encode the given detections of one upright RGB image (one batched encoder call)."""
        if not detections:
            return []
        crops = np.stack([self.align(image, d) for d in detections])
        embeddings = self.encode(crops)
        return [
            Face(detection=d, quality=assess(d, crop, self.config.quality), embedding=emb, crop=crop)
            for d, crop, emb in zip(detections, crops, embeddings, strict=True)
        ]

    def aligned_face(self, image: ImageInput) -> Face:
        """The whole image as one already aligned face crop: no detection; resized to 160x160 and encoded.

        The crop must be what :meth:`align` cuts out (the face's detector box plus this analyzer's margin, eye
        line level), at any size (see :func:`embeddings.align.resize_aligned`). The face's box is the whole
        image; landmarks and confidence are unknown (NaN) and ``aligned_input`` is True. Quality: ``face_size``
        is the implied detector box, the shorter side divided by ``1 + margin`` (px of the given image), and the
        size and sharpness minimums apply; the confidence minimum does not (no detector ran).
        Raises :class:`InvalidImage` for bytes that do not decode or a crop too small or too elongated.
        """
        rgb = self.load_image(image)
        try:
            crop = resize_aligned(rgb, size=CROP_SIZE)
        except ValueError as exc:
            raise InvalidImage(str(exc)) from exc
        h, w = rgb.shape[:2]
        nan = (math.nan, math.nan)
        detection = Detection(Box(0.0, 0.0, float(w), float(h)), Landmarks(nan, nan, nan, nan, nan), math.nan)
        size = min(h, w) / (1.0 + self.config.margin)
        sharp = sharpness(crop)
        limits = self.config.quality
        reasons = [FACE_TOO_SMALL] if size < limits.min_face_size else []
        if limits.min_sharpness > 0 and sharp < limits.min_sharpness:
            reasons.append(BLURRY)
        quality = Quality(face_size=size, confidence=math.nan, sharpness=sharp, reasons=tuple(reasons))
        embedding = self.encode(crop[None])[0]
        return Face(detection=detection, quality=quality, embedding=embedding, crop=crop, aligned_input=True)

    def analyze(self, image: ImageInput) -> list[Face]:
        """Every face in the image, largest first, each with quality and embedding. No face gives ``[]``."""
        rgb = self.load_image(image)
        return self.faces_from_detections(rgb, self.detect(rgb))

    def single_face(self, image: ImageInput, *, largest: bool = False, check_quality: bool = True) -> Face:
        """The one face of an image, as enrolment needs it.

        Raises :class:`NoFace`, :class:`MultipleFaces` (unless ``largest``, which takes the largest) or, when
        ``check_quality``, :class:`BadPose` (turned beyond ``quality.max_yaw``) or :class:`LowQuality` (below the
        other quality minimums).
        """
        rgb = self.load_image(image)
        detections = self.detect(rgb)
        if not detections:
            raise NoFace("no face was found in the image")
        if len(detections) > 1 and not largest:
            raise MultipleFaces(f"{len(detections)} faces were found; exactly one is required")
        face = self.faces_from_detections(rgb, detections[:1])[0]
        if check_quality and not face.quality.ok:
            error = BadPose if POSE in face.quality.reasons else LowQuality
            raise error(
                "the face is below the quality minimums: " + ", ".join(face.quality.reasons),
                face.quality.reasons,
            )
        return face

    def verify(self, image_a: ImageInput, image_b: ImageInput, *, threshold: float | None = None) -> Verification:
        """Compare the largest face of each image. ``threshold`` is an L2 distance (default: the model card's)."""
        a = self.single_face(image_a, largest=True, check_quality=False)
        b = self.single_face(image_b, largest=True, check_quality=False)
        return compare(a.embedding, b.embedding, self.threshold if threshold is None else threshold)


def compare(a: npt.NDArray[np.float32], b: npt.NDArray[np.float32], threshold: float) -> Verification:
    """Compare two unit embeddings against an L2 ``threshold`` (``distance <= threshold`` is a match)."""
    d = distance(a, b)
    return Verification(distance=d, similarity=similarity(a, b), threshold=threshold, match=d <= threshold)
