"""Decode image bytes into an upright RGB uint8 array, refusing oversized or corrupt input early.

Supported: JPEG, PNG, WebP, BMP, TIFF, GIF (first frame), HEIC/HEIF (through pillow-heif) and Netpbm (PBM, PGM,
PPM; binary P4/P5/P6 and plain-text P1/P2/P3, e.g. the ORL/AT&T face set). EXIF orientation is applied, so every
coordinate facerec reports is in pixels of the upright image. Grayscale, palette, RGBA (composited on white), CMYK,
bilevel and 16-bit images become RGB uint8.

Pillow reads every header (format, size, mode, EXIF) and decodes every format but one: complete RGB and greyscale
JPEGs, most uploads, are decoded by OpenCV (the same libjpeg-turbo maths, the same pixels, in less time: Pillow's
path also copies the image twice; figures in docs/BENCHMARKS.md, "identify at 1M faces, stage by stage"); anything
else about them (an incomplete file, CMYK, a size that disagrees with the header) goes through Pillow, whose errors
are the reference.
"""

from __future__ import annotations

import contextlib
import io
import re
import warnings
from collections.abc import Callable
from contextvars import ContextVar

import cv2
import numpy as np
import numpy.typing as npt
from PIL import Image, ImageOps, UnidentifiedImageError

from embeddings.errors import ImageTooLarge, InvalidImage

DEFAULT_MAX_PIXELS = 40_000_000
"""Default limit on width x height, checked from the header before any pixel is decoded."""

DECODE_ADMISSION: ContextVar[Callable[[int], None] | None] = ContextVar("facerec_decode_admission", default=None)
"""Set by a caller (a server's request thread) to be asked before each decode: called with the image's width x
height once the header has passed the checks, it may block until the process has memory for it. Unset: no wait."""

SUPPORTED_FORMATS = frozenset({"JPEG", "PNG", "WEBP", "BMP", "TIFF", "GIF", "MPO", "HEIF", "AVIF", "PPM"})
"""Pillow format names; ``PPM`` is Pillow's name for every Netpbm variant (PBM, PGM and PPM)."""

try:  # HEIC/HEIF phone photos; pillow-heif is a declared dependency, but decoding still works without it.
    from pillow_heif import register_heif_opener

    register_heif_opener()
except ImportError:  # pragma: no cover - only without the optional decoder
    pass

EXIF_ORIENTATION = 0x0112
JPEG_END = b"\xff\xd9"


def _orientation(img: Image.Image) -> int:
    """The EXIF orientation (1-8) of an opened image; 1 when absent or unreadable (as a broken EXIF block is
    ignored by :func:`decode_image`)."""
    try:
        value = int(img.getexif().get(EXIF_ORIENTATION, 1))
    except Exception:
        return 1
    return value if 1 <= value <= 8 else 1


def upright(pixels: npt.NDArray[np.uint8], orientation: int) -> npt.NDArray[np.uint8]:
    """``pixels`` (H, W, C) as stored, turned the way EXIF ``orientation`` says (what Pillow's
    ``ImageOps.exif_transpose`` does: 2 mirror, 3 rotate 180, 4 flip, 5 transpose, 6 rotate 90 clockwise, 7
    transverse, 8 rotate 90 counter-clockwise)."""
    turned = {
        2: lambda a: a[:, ::-1],
        3: lambda a: a[::-1, ::-1],
        4: lambda a: a[::-1],
        5: lambda a: a.transpose(1, 0, 2),
        6: lambda a: np.rot90(a, -1),
        7: lambda a: a[::-1, ::-1].transpose(1, 0, 2),
        8: lambda a: np.rot90(a, 1),
    }.get(orientation)
    return pixels if turned is None else np.ascontiguousarray(turned(pixels))


def _decode_jpeg(data: bytes, img: Image.Image) -> npt.NDArray[np.uint8] | None:
    """A complete RGB or greyscale JPEG decoded by OpenCV and turned upright; None when Pillow should decode it
    (another mode, no end-of-image marker: perhaps truncated, or a size other than the header's)."""
    if img.format != "JPEG" or img.mode not in ("RGB", "L") or not data.rstrip(b"\0\r\n\t ").endswith(JPEG_END):
        return None
    flags = cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
    if bgr is None or bgr.shape != (img.height, img.width, 3):
        return None
    # turned first (a copy only when EXIF says so), the decoded array let go, then the colours swapped in place:
    # no third image-sized array beside the two imdecode holds for a moment (its result and its own buffer)
    pixels = upright(np.asarray(bgr, dtype=np.uint8), _orientation(img))
    del bgr
    return np.asarray(cv2.cvtColor(pixels, cv2.COLOR_BGR2RGB, dst=pixels), dtype=np.uint8)


# Our own limit (``max_pixels``) is checked from the header. Pillow's process-wide guard is left as it is: it refuses
# images over 2 x ``Image.MAX_IMAGE_PIXELS`` (~179 MP) in ``Image.open`` already, which we report the same way.


def _to_rgb(img: Image.Image, *, full_range_16bit: bool = False) -> npt.NDArray[np.uint8]:
    """Convert any Pillow mode to an RGB uint8 array of shape (H, W, 3).

    ``full_range_16bit``: integer data is known to span 0..65535 (Pillow scales a 16-bit PGM's ``maxval`` to
    that range), so it is always scaled down, even when a dark image has no value above 255."""
    mode = img.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        arr = np.asarray(img)
        if mode == "F":
            scaled = np.clip(arr, 0.0, 1.0 if arr.max() <= 1.0 else 255.0)
            gray = (scaled * (255.0 if arr.max() <= 1.0 else 1.0)).astype(np.uint8)
        else:
            wide = arr.astype(np.int64)
            # 16-bit data (the usual case for I/I;16) is scaled down; 8-bit data stored wide is kept.
            gray = (wide >> 8 if full_range_16bit or wide.max() > 255 else wide).clip(0, 255).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba)
    if img.mode != "RGB":
        img = img.convert("RGB")
    return _rgb_array(img)


STRIP_BYTES = 8 << 20
"""Rows copied out of a Pillow image at a time by :func:`_rgb_array` (bytes of the array they fill)."""


def _rgb_array(img: Image.Image) -> npt.NDArray[np.uint8]:
    """An RGB image's pixels as a new writable (H, W, 3) array, copied in strips of rows: ``np.asarray(img)``
    would first join the whole image into one bytes object (itself assembled from chunks), holding two more
    image-sized buffers at once beside Pillow's own (4 bytes a pixel)."""
    width, height = img.size
    out = np.empty((height, width, 3), dtype=np.uint8)
    rows = max(1, STRIP_BYTES // (3 * width))
    for top in range(0, height, rows):
        bottom = min(height, top + rows)
        out[top:bottom] = np.asarray(img.crop((0, top, width, bottom)), dtype=np.uint8)
    return out


def _bomb_message(exc: Image.DecompressionBombError, max_pixels: int) -> str:
    """Pillow's refusal said as our own limit is (Pillow names the pixel count only, not the width and height)."""
    found = re.search(r"\((\d+) pixels\)", str(exc))
    size = f"{int(found.group(1))} pixels = {int(found.group(1)) / 1e6:.1f} MP" if found else "too many pixels"
    return f"the image header declares {size}, over the limit of {max_pixels / 1e6:.1f} MP"


def decode_image(data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> npt.NDArray[np.uint8]:
    """Decode ``data`` to an upright RGB uint8 array of shape (height, width, 3).

    Raises :class:`InvalidImage` (with the reason) for empty, truncated, corrupt or unsupported bytes, and
    :class:`ImageTooLarge` when the header declares more than ``max_pixels`` pixels (nothing is decoded then).
    """
    if not data:
        raise InvalidImage("the image is empty (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            img = Image.open(io.BytesIO(data))
    except UnidentifiedImageError as exc:
        raise InvalidImage("the bytes are not an image in a supported format") from exc
    except Image.DecompressionBombError as exc:
        raise ImageTooLarge(_bomb_message(exc, max_pixels)) from exc
    except Exception as exc:
        raise InvalidImage(f"the image header could not be read: {type(exc).__name__}") from exc
    if img.format not in SUPPORTED_FORMATS:
        raise InvalidImage(f"unsupported image format {img.format!r}")
    width, height = img.size
    if width < 1 or height < 1:
        raise InvalidImage(f"the image has no pixels ({width}x{height})")
    if width * height > max_pixels:
        raise ImageTooLarge(
            f"the image is {width}x{height} = {width * height / 1e6:.1f} MP, over the limit of "
            f"{max_pixels / 1e6:.1f} MP"
        )
    admit = DECODE_ADMISSION.get()
    if admit is not None:
        admit(width * height)
    fast = _decode_jpeg(data, img)
    if fast is not None:
        return fast
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            img.seek(0)
            img.load()
            # in place: without an orientation to apply, exif_transpose would otherwise copy the image; a broken
            # EXIF block must not reject an otherwise good image
            with contextlib.suppress(Exception):
                ImageOps.exif_transpose(img, in_place=True)
            rgb = _to_rgb(img, full_range_16bit=img.format == "PPM")
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise InvalidImage(f"the image data is corrupt or truncated: {exc}") from exc
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise InvalidImage(f"the image decoded to an unexpected shape {rgb.shape}")
    return rgb
