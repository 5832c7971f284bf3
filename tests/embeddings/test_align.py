"""Alignment geometry: what the crop holds where the margin reaches beyond the image."""

from __future__ import annotations

import numpy as np

from embeddings.align import BORDER_FILL, CROP_SIZE, align_face
from embeddings.types import Box, Detection, Landmarks


def _corner_face() -> Detection:
    """A face box at the image's top-left corner, eyes level: the crop's margin lies outside the image."""
    lm = Landmarks((18.0, 24.0), (42.0, 24.0), (30.0, 36.0), (20.0, 48.0), (40.0, 48.0))
    return Detection(Box(0.0, 0.0, 60.0, 60.0), lm, 0.99)


def test_pixels_outside_the_image_are_mid_grey() -> None:
    image = np.full((100, 100, 3), (200, 50, 50), np.uint8)
    crop = align_face(image, _corner_face())
    assert crop.shape == (CROP_SIZE, CROP_SIZE, 3)
    # the margin (7.5% of the box a side) is outside at the top-left: grey there, the image's colour inside
    assert crop[0, 0].tolist() == list(BORDER_FILL) == [128, 128, 128]
    assert crop[CROP_SIZE // 2, CROP_SIZE // 2].tolist() == [200, 50, 50]
    assert crop[-1, -1].tolist() == [200, 50, 50]


def test_a_face_inside_the_image_never_sees_the_fill() -> None:
    image = np.full((200, 200, 3), (200, 50, 50), np.uint8)
    lm = Landmarks((88.0, 94.0), (112.0, 94.0), (100.0, 106.0), (90.0, 118.0), (110.0, 118.0))
    crop = align_face(image, Detection(Box(70.0, 70.0, 60.0, 60.0), lm, 0.99))
    assert (crop == np.array([200, 50, 50], np.uint8)).all()
