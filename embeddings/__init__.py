"""facerec's ML library: decode, detect (MTCNN), align, encode (FaceNet 128-d), compare and evaluate.

Never imports the service. Conventions: boxes are ``(x, y, width, height)`` in pixels of the upright image;
embeddings are float32 (128,) unit vectors; distances are L2 in [0, 2], similarity is ``1 - d**2 / 2``.
"""

from embeddings.align import CROP_SIZE, align_face, prewhiten
from embeddings.analyzer import AnalyzerConfig, FaceAnalyzer, Verification, compare
from embeddings.detector import FaceDetector, pick_primary
from embeddings.distance import distance, distance_to_similarity, pairwise_distances, similarity
from embeddings.errors import (
    FaceRecError,
    ImageTooLarge,
    InvalidImage,
    LowQuality,
    MultipleFaces,
    NoFace,
    WeightsUnavailable,
)
from embeddings.facenet import FaceNetEncoder
from embeddings.images import decode_image
from embeddings.model_card import default_threshold, load_card
from embeddings.quality import QualityThresholds
from embeddings.types import EMBEDDING_DIM, Box, Detection, Face, Landmarks, Quality
from embeddings.weights import MODEL_ID

__all__ = [
    "CROP_SIZE",
    "EMBEDDING_DIM",
    "MODEL_ID",
    "AnalyzerConfig",
    "Box",
    "Detection",
    "Face",
    "FaceAnalyzer",
    "FaceDetector",
    "FaceNetEncoder",
    "FaceRecError",
    "ImageTooLarge",
    "InvalidImage",
    "Landmarks",
    "LowQuality",
    "MultipleFaces",
    "NoFace",
    "Quality",
    "QualityThresholds",
    "Verification",
    "WeightsUnavailable",
    "align_face",
    "compare",
    "decode_image",
    "default_threshold",
    "distance",
    "distance_to_similarity",
    "load_card",
    "pairwise_distances",
    "pick_primary",
    "prewhiten",
    "similarity",
]
