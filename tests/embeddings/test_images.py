"""Decoding: every format and mode becomes upright RGB uint8; bad bytes raise InvalidImage with a reason."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from embeddings import ImageTooLarge, InvalidImage, decode_image
from tests.conftest import decoded_with_peak


def _encode(img: Image.Image, fmt: str, **kw: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _gradient(w: int = 64, h: int = 48) -> Image.Image:
    x = np.linspace(0, 255, w, dtype=np.uint8)[None, :, None].repeat(h, 0)
    y = np.linspace(0, 255, h, dtype=np.uint8)[:, None, None].repeat(w, 1)
    return Image.fromarray(np.concatenate([x, y, 255 - x], axis=2))


def _png_header_claiming(width: int, height: int) -> bytes:
    """A PNG whose IHDR declares ``width`` x ``height`` with a valid CRC, followed by a tiny IDAT and IEND."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "BMP", "TIFF"])
def test_common_formats_decode_to_rgb(fmt: str) -> None:
    img = _gradient()
    arr = decode_image(_encode(img, fmt))
    assert arr.dtype == np.uint8 and arr.shape == (48, 64, 3)
    assert np.abs(arr.astype(int) - np.asarray(img).astype(int)).mean() < 8


def test_heic_decodes() -> None:
    pillow_heif = pytest.importorskip("pillow_heif")
    pillow_heif.register_heif_opener()
    try:
        data = _encode(_gradient(), "HEIF", quality=90)
    except (KeyError, OSError, ValueError) as exc:  # no HEVC encoder in this libheif build
        pytest.skip(f"cannot encode HEIF here: {exc}")
    arr = decode_image(data)
    assert arr.shape == (48, 64, 3) and arr.dtype == np.uint8


@pytest.mark.parametrize(
    "mode",
    ["L", "RGBA", "LA", "P", "CMYK", "1"],
    ids=["grayscale", "rgba", "gray-alpha", "palette", "cmyk", "bilevel"],
)
def test_modes_become_rgb(mode: str) -> None:
    img = _gradient().convert(mode)
    fmt = "JPEG" if mode == "CMYK" else "PNG"
    arr = decode_image(_encode(img, fmt))
    assert arr.shape == (48, 64, 3) and arr.dtype == np.uint8


def test_cmyk_jpeg_keeps_colours() -> None:
    img = Image.new("RGB", (32, 32), (200, 30, 30))
    arr = decode_image(_encode(img.convert("CMYK"), "JPEG", quality=95))
    r, g, b = arr.reshape(-1, 3).mean(axis=0)
    assert r > 150 and g < 80 and b < 80


def test_rgba_is_composited_on_white() -> None:
    img = Image.new("RGBA", (8, 8), (255, 0, 0, 0))
    arr = decode_image(_encode(img, "PNG"))
    assert (arr == 255).all()


def test_16bit_png_is_scaled_not_clipped() -> None:
    ramp = np.linspace(0, 65535, 64 * 48, dtype=np.uint16).reshape(48, 64)
    arr = decode_image(_encode(Image.fromarray(ramp), "PNG"))
    assert arr.shape == (48, 64, 3)
    assert arr[0, 0, 0] == 0 and arr[-1, -1, 0] == 255
    assert 100 < arr[24, 32, 0] < 160  # the middle of the ramp is mid-grey, not white


def test_exif_orientation_is_applied() -> None:
    img = _gradient(64, 48)
    stored = img.transpose(Image.Transpose.ROTATE_90)  # what a camera stores; orientation 6 turns it back
    exif = Image.Exif()
    exif[0x0112] = 6
    arr = decode_image(_encode(stored, "JPEG", exif=exif.tobytes(), quality=95))
    assert arr.shape == (48, 64, 3)
    assert np.abs(arr.astype(int) - np.asarray(img).astype(int)).mean() < 8


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty"),
        (b"hello, this is a text file\n" * 10, "not an image"),
        (b"\xff\xd8\xff\xe0" + b"\0" * 40, "not an image"),
        (b"<svg xmlns='http://www.w3.org/2000/svg' width='10' height='10'/>", "not an image"),
    ],
    ids=["empty", "text", "jpeg-magic-garbage", "svg"],
)
def test_bad_bytes_raise_invalid_image(data: bytes, reason: str) -> None:
    with pytest.raises(InvalidImage) as info:
        decode_image(data)
    assert reason in info.value.message
    assert info.value.code == "invalid_image"


def test_truncated_jpeg_is_invalid() -> None:
    data = _encode(_gradient(256, 256), "JPEG", quality=95)
    with pytest.raises(InvalidImage, match="corrupt or truncated"):
        decode_image(data[: len(data) // 2])


def test_header_claiming_huge_size_is_refused_before_decoding() -> None:
    with pytest.raises(ImageTooLarge) as info:
        decode_image(_png_header_claiming(100_000, 100_000))
    assert info.value.code == "payload_too_large"
    assert "10000000000 pixels = 10000.0 MP, over the limit of 40.0 MP" in info.value.message  # from the header alone


def test_header_over_our_limit_names_the_size() -> None:
    with pytest.raises(ImageTooLarge, match="9000x9000"):
        decode_image(_png_header_claiming(9000, 9000))  # 81 MP: under Pillow's guard, over our 40 MP default


def test_pixel_limit_is_configurable() -> None:
    data = _encode(_gradient(64, 48), "PNG")
    with pytest.raises(ImageTooLarge):
        decode_image(data, max_pixels=1000)
    assert decode_image(data, max_pixels=64 * 48).shape == (48, 64, 3)


def test_one_pixel_png_decodes() -> None:
    arr = decode_image(_encode(Image.new("RGB", (1, 1), (10, 20, 30)), "PNG"))
    assert arr.shape == (1, 1, 3) and tuple(arr[0, 0]) == (10, 20, 30)


def test_gif_first_frame() -> None:
    frames = [Image.new("P", (16, 16), i) for i in (1, 2, 3)]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:])
    assert decode_image(buf.getvalue()).shape == (16, 16, 3)


# ---- Netpbm (PBM, PGM, PPM): the ORL/AT&T face set is PGM ---------------------------------------------------


def _netpbm_binary(magic: bytes, w: int, h: int, maxval: int | None, pixels: bytes) -> bytes:
    head = magic + b"\n# made in the test\n" + f"{w} {h}\n".encode()
    return head + (f"{maxval}\n".encode() if maxval is not None else b"") + pixels


def test_pgm_binary_p5_decodes_to_grey_rgb() -> None:
    grey = np.arange(48 * 64, dtype=np.uint32).reshape(48, 64) % 256
    arr = decode_image(_netpbm_binary(b"P5", 64, 48, 255, grey.astype(np.uint8).tobytes()))
    assert arr.shape == (48, 64, 3) and arr.dtype == np.uint8
    assert (arr[:, :, 0] == grey).all() and (arr[:, :, 1] == grey).all() and (arr[:, :, 2] == grey).all()


def test_pgm_plain_p2_decodes() -> None:
    data = b"P2\n3 2\n255\n0 128 255\n10 20 30\n"
    arr = decode_image(data)
    assert arr.shape == (2, 3, 3)
    assert arr[:, :, 0].tolist() == [[0, 128, 255], [10, 20, 30]]


def test_pgm_plain_p2_small_maxval_is_scaled() -> None:
    arr = decode_image(b"P2\n2 1\n15\n0 15\n")
    assert arr[0, :, 0].tolist() == [0, 255]


def test_pgm_16bit_is_scaled_to_8bit() -> None:
    ramp = np.linspace(0, 65535, 64 * 48).astype(">u2").reshape(48, 64)
    arr = decode_image(_netpbm_binary(b"P5", 64, 48, 65535, ramp.tobytes()))
    assert arr.shape == (48, 64, 3)
    assert arr[0, 0, 0] == 0 and arr[-1, -1, 0] == 255
    assert 100 < arr[24, 32, 0] < 160  # mid-grey, not clipped


def test_dark_pgm_16bit_stays_dark() -> None:
    # every value <= 255 out of 65535: near black, not read as 8-bit data
    dark = np.full((8, 8), 200, dtype=">u2")
    arr = decode_image(_netpbm_binary(b"P5", 8, 8, 65535, dark.tobytes()))
    assert arr.max() == 0


def test_ppm_binary_p6_keeps_colours() -> None:
    img = _gradient()
    rgb = np.asarray(img)
    arr = decode_image(_netpbm_binary(b"P6", 64, 48, 255, rgb.tobytes()))
    assert (arr == rgb).all()


def test_ppm_written_by_pillow_round_trips() -> None:
    img = _gradient()
    assert (decode_image(_encode(img, "PPM")) == np.asarray(img)).all()
    grey = img.convert("L")
    assert (decode_image(_encode(grey, "PPM"))[:, :, 0] == np.asarray(grey)).all()


def test_pbm_plain_p1_and_binary_p4_decode() -> None:
    # 1 = black in PBM
    plain = decode_image(b"P1\n3 2\n1 0 1\n0 1 0\n")
    assert plain[:, :, 0].tolist() == [[0, 255, 0], [255, 0, 255]]
    # P4: rows padded to whole bytes, most significant bit first
    binary = decode_image(_netpbm_binary(b"P4", 3, 2, None, bytes([0b10100000, 0b01000000])))
    assert (binary == plain).all()


def test_truncated_pgm_is_invalid() -> None:
    with pytest.raises(InvalidImage):
        decode_image(_netpbm_binary(b"P5", 64, 48, 255, b"\x10" * 100))


@pytest.mark.parametrize("orientation", [1, 6])
def test_a_large_png_is_copied_out_of_pillow_in_strips(orientation: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Pillow's pixels reach the array a strip of rows at a time, and an image without an orientation to apply is
    not copied by ``exif_transpose``: beside Pillow's own buffer, little more than the result is alive at once."""
    from embeddings import images

    monkeypatch.setattr(images, "STRIP_BYTES", 1 << 20)  # strips small beside the image, as at 40 MP
    img = _gradient(3200, 2000)
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = _encode(img, "PNG", exif=exif.tobytes(), compress_level=1)
    image_bytes = 3200 * 2000 * 3
    out, peak = decoded_with_peak(data)
    expected = np.asarray(img) if orientation == 1 else np.rot90(np.asarray(img), -1)
    np.testing.assert_array_equal(out, expected)
    assert out.flags.writeable and out.flags.c_contiguous
    assert peak < 1.5 * image_bytes, f"peak {peak / image_bytes:.2f} images"
