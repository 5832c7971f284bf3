"""Faces of one image: detection, embedding, and the one face a probe uses."""

from __future__ import annotations

from typing import Any

from embeddings import Face, FaceAnalyzer


def probe_face(analyzer: FaceAnalyzer, image: bytes, *, aligned: bool = False) -> Face:
    """The face to compare: the largest detected one, or with ``aligned`` the whole image as an already aligned
    face crop (:meth:`FaceAnalyzer.aligned_face`, no detection)."""
    if aligned:
        return analyzer.aligned_face(image)
    return analyzer.single_face(image, largest=True, check_quality=False)


def detect(*, analyzer: FaceAnalyzer, image: bytes) -> tuple[tuple[int, int], list[Any]]:
    """``((width, height), detections)`` of the upright image, largest face first."""
    rgb = analyzer.load_image(image)
    return (int(rgb.shape[1]), int(rgb.shape[0])), analyzer.detect(rgb)


def embed(*, analyzer: FaceAnalyzer, image: bytes, aligned: bool = False) -> list[Face]:
    """Every face with its quality and 128-d unit embedding, largest first; ``aligned``: the image is one
    already aligned face crop, embedded without detection (:meth:`FaceAnalyzer.aligned_face`)."""
    return [analyzer.aligned_face(image)] if aligned else analyzer.analyze(image)
