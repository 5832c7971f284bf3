"""Hostile files, all built in memory: each is a ``Bad(name, data, kind)``.

``kind`` is what a correct server makes of it:
  ``invalid``   not a decodable image in a supported format -> 422 ``invalid_image``
  ``too_large`` over the pixel limit (from its header) or the upload limit -> 413 ``payload_too_large``
  ``faceless``  a real, decodable image with no face (1x1, GIF animation, a JPEG with a ZIP appended...) -> the
                endpoint's no-face answer: detect/embed/identify 200 with no faces, verify 422 ``no_face``,
                enrolment 200 with the image in ``rejected``
"""

from __future__ import annotations

import io
import struct
import zlib
from dataclasses import dataclass

import numpy as np
from PIL import Image


@dataclass(frozen=True)
class Bad:
    name: str
    data: bytes
    kind: str  # "invalid" | "too_large" | "faceless"

    def __repr__(self) -> str:
        return f"Bad({self.name}, {len(self.data)} bytes, {self.kind})"


def chunk(kind: bytes, body: bytes) -> bytes:
    """A PNG chunk with a valid CRC."""
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


PNG_SIG = b"\x89PNG\r\n\x1a\n"


def ihdr(width: int, height: int, color_type: int = 2) -> bytes:
    return chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, color_type, 0, 0, 0))


def png_raw(width: int, height: int, idat: bytes, *extra_before: bytes) -> bytes:
    return PNG_SIG + ihdr(width, height) + b"".join(extra_before) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def encode(img: Image.Image, fmt: str, **kw: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def zeros_deflated(n: int) -> bytes:
    """zlib of ``n`` zero bytes, compressed in pieces (never holds ``n`` bytes at once)."""
    comp = zlib.compressobj(9)
    block = bytes(1 << 20)
    out = []
    for _ in range(n >> 20):
        out.append(comp.compress(block))
    out.append(comp.compress(bytes(n & ((1 << 20) - 1))))
    out.append(comp.flush())
    return b"".join(out)


def jpeg_with_size(jpeg: bytes, width: int, height: int) -> bytes:
    """``jpeg`` with its SOF0 frame header rewritten to claim ``width`` x ``height``."""
    i = 2
    while i < len(jpeg):
        marker, length = jpeg[i + 1], struct.unpack(">H", jpeg[i + 2 : i + 4])[0]
        if marker in (0xC0, 0xC1, 0xC2):
            return jpeg[: i + 5] + struct.pack(">HH", height, width) + jpeg[i + 9 :]
        i += 2 + length
    raise ValueError("no SOF marker")


def mangle_huffman(jpeg: bytes) -> bytes:
    """Overwrite every DHT segment's tables with 0xFF: the header parses, the scan cannot be decoded."""
    out = bytearray(jpeg)
    i = 2
    while i < len(out) and out[i + 1] != 0xDA:
        marker, length = out[i + 1], struct.unpack(">H", out[i + 2 : i + 4])[0]
        if marker == 0xC4:
            out[i + 5 : i + 2 + length] = b"\xff" * (length - 3)
        i += 2 + length
    return bytes(out)


def gif_animation(frames: int, size: int = 64) -> bytes:
    rng = np.random.default_rng(1)
    imgs = [Image.fromarray(rng.integers(0, 255, (size, size), dtype=np.uint8), "L") for _ in range(frames)]
    return encode(imgs[0], "GIF", save_all=True, append_images=imgs[1:], duration=10, loop=0)


def build(face_jpeg: bytes, face_png: bytes, max_upload: int) -> list[Bad]:
    gray = Image.new("RGB", (32, 32), (120, 120, 120))
    small_jpeg = encode(gray, "JPEG")
    small_png = encode(gray, "PNG")
    zip_tail = _zip_file()
    html = b"<html><body><script>alert(document.cookie)</script></body></html>"
    svg = (
        b'<?xml version="1.0"?><!DOCTYPE svg [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;">]>'
        b'<svg xmlns="http://www.w3.org/2000/svg" width="100000" height="100000"><text>&b;</text>'
        b'<image href="file:///etc/passwd"/></svg>'
    )
    rng = np.random.default_rng(0)
    noise_100mp_head = PNG_SIG + ihdr(10_000, 10_000) + struct.pack(">I", 300_010_000) + b"IDAT"
    items = [
        Bad("zero-bytes", b"", "invalid"),
        Bad("one-byte", b"\xff", "invalid"),
        Bad("jpeg-soi-only", b"\xff\xd8", "invalid"),
        Bad("jpeg-truncated-header", face_jpeg[:300], "invalid"),
        Bad("jpeg-truncated-half", face_jpeg[: len(face_jpeg) // 2], "invalid"),
        Bad("jpeg-bad-huffman", mangle_huffman(face_jpeg), "invalid"),
        Bad("png-truncated", face_png[: len(face_png) // 2], "invalid"),
        Bad("png-bad-crc", face_png[:40] + bytes([face_png[40] ^ 0xFF]) + face_png[41:], "invalid"),
        Bad("png-zero-width", png_raw(0, 10, zlib.compress(b"")), "invalid"),
        Bad("png-bad-zlib", png_raw(64, 64, b"\x78\x9c" + rng.bytes(500)), "invalid"),
        Bad("png-ihdr-100000x100000", png_raw(100_000, 100_000, zlib.compress(bytes(1000))), "too_large"),
        Bad("png-ihdr-7000x7000", png_raw(7000, 7000, zlib.compress(bytes(1000))), "too_large"),
        Bad("png-ihdr-2^31", png_raw(2**31 - 1, 2**31 - 1, zlib.compress(bytes(10))), "too_large"),
        # 4000x4000 (16 MP: under the limit) whose 48 MB of pixels inflate from ~50 KB: a real, faceless image
        Bad("png-zlib-bomb-16mp", png_raw(4000, 4000, zeros_deflated(4000 * (1 + 4000 * 3))), "faceless"),
        # text / ICC chunks that inflate to 200 MB: Pillow refuses to inflate them past MAX_TEXT_CHUNK
        Bad(
            "png-ztxt-bomb",
            png_raw(
                32, 32, zlib.compress(bytes(32 * 97)), chunk(b"zTXt", b"Comment\x00\x00" + zeros_deflated(200 << 20))
            ),
            "invalid",
        ),
        Bad(
            "png-iccp-bomb",
            png_raw(32, 32, zlib.compress(bytes(32 * 97)), chunk(b"iCCP", b"icc\x00\x00" + zeros_deflated(200 << 20))),
            "invalid",
        ),
        Bad(
            "png-itxt-huge",
            png_raw(32, 32, zlib.compress(bytes(32 * 97)), chunk(b"tEXt", b"k\x00" + b"x" * 40_000)),
            "faceless",
        ),
        # a chunk whose length field claims 2 GB, with 1 KB behind it
        Bad(
            "png-chunk-length-2gb",
            PNG_SIG + ihdr(32, 32) + struct.pack(">I", 2**31 - 1) + b"tEXt" + bytes(1024),
            "invalid",
        ),
        Bad("jpeg-sof-65000x65000", jpeg_with_size(small_jpeg, 65000, 65000), "too_large"),
        Bad("jpeg-sof-65000x1000", jpeg_with_size(small_jpeg, 65000, 1000), "too_large"),
        Bad("jpeg-sof-0x0", jpeg_with_size(small_jpeg, 0, 0), "invalid"),
        Bad("gif-animation-300-frames", gif_animation(300), "faceless"),
        Bad(
            "gif-screen-65535x65535", b"GIF89a" + struct.pack("<HH", 65535, 65535) + gif_animation(2)[10:], "too_large"
        ),
        Bad("polyglot-jpeg-zip", small_jpeg + zip_tail, "faceless"),
        Bad("polyglot-html-then-jpeg", html + small_jpeg, "invalid"),
        Bad(
            "polyglot-jpeg-html-comment",
            small_jpeg[:2] + b"\xff\xfe" + struct.pack(">H", len(html) + 2) + html + small_jpeg[2:],
            "faceless",
        ),
        Bad("polyglot-gif-js", b"GIF89a/*\x00\x00\x00\x00*/=alert(1);//" + html, "invalid"),
        Bad("zip", zip_tail, "invalid"),
        Bad("html", html, "invalid"),
        Bad("svg-entities-xlink", svg, "invalid"),
        Bad("pdf", b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF", "invalid"),
        Bad("eps", b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n", "invalid"),
        Bad("ico", encode(gray, "ICO"), "invalid"),
        Bad(
            "heif-garbage", struct.pack(">I", 24) + b"ftypheic" + b"\x00" * 4 + b"mif1heic" + rng.bytes(2000), "invalid"
        ),
        Bad("webp-truncated", encode(gray, "WEBP")[:30], "invalid"),
        Bad("tiff-bomb-dims", _tiff(60000, 60000), "too_large"),
        Bad(
            "bmp-bomb-dims",
            b"BM"
            + struct.pack("<IHHI", 1000, 0, 0, 54)
            + struct.pack("<IiiHHIIiiII", 40, 50000, -50000, 1, 24, 0, 0, 0, 0, 0, 0)
            + b"\x00" * 64,
            "too_large",
        ),
        Bad("random-64k", rng.bytes(65536), "invalid"),
        Bad("png-1x1", encode(Image.new("RGB", (1, 1)), "PNG"), "faceless"),
        Bad("jpeg-1x1", encode(Image.new("RGB", (1, 1)), "JPEG"), "faceless"),
        Bad("png-1x10000", encode(Image.new("L", (1, 10000)), "PNG"), "faceless"),
        Bad("png-16bit-rgba-tiny", encode(Image.new("I;16", (3, 3)), "PNG"), "faceless"),
        Bad("small-png", small_png, "faceless"),
        # 100 MP of noise cannot be sent under the upload limit (it does not compress): its start, over the limit
        Bad("png-100mp-noise", noise_100mp_head + rng.bytes(max_upload + 1024 - len(noise_100mp_head)), "too_large"),
    ]
    return items


def _zip_file() -> bytes:
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("payload.html", "<script>alert(1)</script>")
        z.writestr("bomb.bin", bytes(5_000_000))
    return buf.getvalue()


def _tiff(width: int, height: int) -> bytes:
    """A little-endian TIFF whose IFD claims ``width`` x ``height`` 8-bit gray, with one strip of 16 bytes."""
    entries = [
        (256, 4, 1, width),  # ImageWidth LONG
        (257, 4, 1, height),  # ImageLength
        (258, 3, 1, 8),  # BitsPerSample
        (259, 3, 1, 1),  # Compression none
        (262, 3, 1, 1),  # Photometric min-is-black
        (273, 4, 1, 8 + 2 + 12 * 9 + 4),  # StripOffsets
        (277, 3, 1, 1),  # SamplesPerPixel
        (278, 4, 1, height),  # RowsPerStrip
        (279, 4, 1, 16),  # StripByteCounts
    ]
    ifd = struct.pack("<H", len(entries)) + b"".join(struct.pack("<HHII", *e) for e in entries) + b"\x00" * 4
    return b"II*\x00" + struct.pack("<I", 8) + ifd + b"\x00" * 16
