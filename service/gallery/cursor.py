"""Opaque pagination cursors of subject lists, shared by every backend.

A cursor encodes the creation-order key (an increasing integer) of the last subject of a page; the next page
starts after it. Cursors are URL-safe base64 without padding; a cursor this module did not make raises
:class:`InvalidCursor` (a ``ValueError``; the API answers 422).
"""

from __future__ import annotations

import base64
import binascii
import re

from service.gallery.errors import InvalidCursor

ROW_KEY = re.compile(r"[0-9]{1,18}")
"""A non-negative integer key as a cursor spells it: ASCII digits only (``str.isdigit`` and ``int`` also take
other scripts' digits), at most 18, so that it fits a signed 64-bit column."""


def encode_cursor(key: int) -> str:
    """The cursor of the page that starts after creation-order key ``key``."""
    return base64.urlsafe_b64encode(f"s{key}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    """The creation-order key a cursor made by :func:`encode_cursor` holds; :class:`InvalidCursor` otherwise."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        if not raw.startswith("s") or not ROW_KEY.fullmatch(raw[1:]):
            raise ValueError(cursor)
        return int(raw[1:])
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise InvalidCursor(f"invalid cursor {cursor[:40]!r}") from None
