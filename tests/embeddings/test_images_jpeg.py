"""JPEGs decoded by OpenCV give Pillow's pixels: real photos, greyscale, every EXIF orientation; whatever the fast
path does not take (truncated files, trailing bytes, CMYK) still decodes, or fails, as Pillow decides."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from PIL import Image, ImageOps

from embeddings import InvalidImage, decode_image
from embeddings.images import EXIF_ORIENTATION, _decode_jpeg, upright
from tests.conftest import decoded_with_peak, image_files


def pillow_rgb(data: bytes) -> npt.NDArray[np.uint8]:
    """The reference: Pillow's decode, EXIF orientation applied, as RGB."""
    img = ImageOps.exif_transpose(Image.open(io.BytesIO(data)))
    return np.asarray(img.convert("RGB"), dtype=np.uint8)


def jpeg(pixels: npt.NDArray[np.uint8], orientation: int = 1, quality: int = 90) -> bytes:
    img = Image.fromarray(pixels)
    exif = Image.Exif()
    if orientation != 1:
        exif[EXIF_ORIENTATION] = orientation
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality, exif=exif.tobytes())
    return buf.getvalue()


def photo_like(width: int = 96, height: int = 64) -> npt.NDArray[np.uint8]:
    rng = np.random.default_rng(width * height)
    ys, xs = np.mgrid[0:height, 0:width]
    base = np.stack([xs * 255 // width, ys * 255 // height, (xs + ys) % 256], axis=-1)
    return np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8)


def test_real_photos_decode_to_pillows_pixels(celebrity_root: Path) -> None:
    files = [f for part in ("train", "val") for p in sorted((celebrity_root / part).iterdir()) for f in image_files(p)]
    jpegs = [f.read_bytes() for f in files if f.suffix.lower() in (".jpg", ".jpeg")]
    assert len(jpegs) >= 10
    for data in jpegs:
        img = Image.open(io.BytesIO(data))
        if img.mode in ("RGB", "L"):
            assert _decode_jpeg(data, img) is not None  # the fast path takes them
        np.testing.assert_array_equal(decode_image(data), pillow_rgb(data))


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_exif_orientation_is_pillows(orientation: int) -> None:
    data = jpeg(photo_like(), orientation)
    assert _decode_jpeg(data, Image.open(io.BytesIO(data))) is not None
    out = decode_image(data)
    np.testing.assert_array_equal(out, pillow_rgb(data))
    assert out.shape[:2] == ((64, 96) if orientation < 5 else (96, 64))
    assert out.flags.c_contiguous


def test_upright_turns_like_pillow() -> None:
    stored = photo_like(5, 3)
    for orientation in range(1, 9):
        img = Image.fromarray(stored)
        exif = img.getexif()
        exif[EXIF_ORIENTATION] = orientation
        img.info["exif"] = exif.tobytes()
        expected = np.asarray(ImageOps.exif_transpose(img))
        np.testing.assert_array_equal(upright(stored, orientation), expected)


def test_greyscale_jpeg_becomes_the_same_rgb() -> None:
    data = jpeg(photo_like()[:, :, 0])
    out = decode_image(data)
    assert out.shape == (64, 96, 3)
    np.testing.assert_array_equal(out, pillow_rgb(data))


def test_what_the_fast_path_leaves_to_pillow() -> None:
    data = jpeg(photo_like(256, 256), quality=95)
    image = Image.open(io.BytesIO(data[: len(data) // 2]))
    assert _decode_jpeg(data[: len(data) // 2], image) is None  # no end marker: perhaps truncated
    with pytest.raises(InvalidImage, match="corrupt or truncated"):
        decode_image(data[: len(data) // 2])
    trailing = data + b"trailing bytes a camera appended"
    assert _decode_jpeg(trailing, Image.open(io.BytesIO(trailing))) is None
    np.testing.assert_array_equal(decode_image(trailing), pillow_rgb(data))
    cmyk = io.BytesIO()
    Image.fromarray(photo_like()).convert("CMYK").save(cmyk, format="JPEG")
    assert _decode_jpeg(cmyk.getvalue(), Image.open(io.BytesIO(cmyk.getvalue()))) is None
    np.testing.assert_array_equal(decode_image(cmyk.getvalue()), pillow_rgb(cmyk.getvalue()))


def test_trailing_padding_and_a_broken_exif_block_stay_on_the_fast_path() -> None:
    data = jpeg(photo_like(), orientation=6)
    padded = data + b"\0\0\r\n"  # some writers pad after the end-of-image marker
    assert _decode_jpeg(padded, Image.open(io.BytesIO(padded))) is not None
    np.testing.assert_array_equal(decode_image(padded), pillow_rgb(data))
    start = data.index(b"Exif\0\0") + 6  # the TIFF header of the EXIF block, made unreadable
    broken = data[:start] + b"XXXX" + data[start + 4 :]
    assert _decode_jpeg(broken, Image.open(io.BytesIO(broken))) is not None
    out = decode_image(broken)
    assert out.shape == (64, 96, 3)  # orientation unreadable: stored as is, as the Pillow path does
    np.testing.assert_array_equal(out, np.asarray(Image.open(io.BytesIO(broken)).convert("RGB")))


@pytest.mark.parametrize("orientation", [1, 6])
def test_a_turned_jpeg_is_decoded_with_at_most_two_image_sized_arrays_alive(orientation: int) -> None:
    """A phone photo (stored landscape, EXIF 6) near the pixel limit must not hold three copies at once: the
    colour swap happens in place, after the turn, once the decoded array is let go."""
    data = jpeg(photo_like(1200, 800), orientation)
    image_bytes = 1200 * 800 * 3
    out, peak = decoded_with_peak(data)
    np.testing.assert_array_equal(out, pillow_rgb(data))
    assert peak < 2.2 * image_bytes, f"peak {peak / image_bytes:.2f} images"
