"""Page cursors: what the list endpoints hand out as ``next_cursor`` and read back as ``cursor``.

A cursor is opaque to clients; one the server did not issue is a 422 ``validation_error``
(:class:`service.errors.BadRequest`), never a 500 from a database that cannot hold the number.
"""

from __future__ import annotations

import math
import re

from service.errors import BadRequest
from service.gallery.cursor import ROW_KEY

_TIME_ID = re.compile(r"([0-9]{1,16}(?:\.[0-9]{1,17})?)_([0-9a-f]{1,64})")
"""A keyset cursor ``<Unix seconds>_<hex id>``: the last item of a page ordered by time then id; the time is
Python's shortest round-tripping spelling of the stored float, so the next page starts exactly after it."""

NOT_ISSUED = "cursor: not a cursor this server issued"


def int_cursor(cursor: str | None) -> int | None:
    """The integer in ``cursor`` (an offset or the last id of the previous page); None for no cursor."""
    if cursor is None:
        return None
    if not ROW_KEY.fullmatch(cursor):
        raise BadRequest(NOT_ISSUED)
    return int(cursor)


def time_id_cursor(created_at: float, item_id: str) -> str:
    """The cursor after an item created at ``created_at`` (Unix seconds, >= 0) with hex id ``item_id``."""
    return f"{created_at!r}_{item_id}"


def parse_time_id_cursor(cursor: str | None) -> tuple[float, str] | None:
    """``(created_at, id)`` of a :func:`time_id_cursor`; None for no cursor."""
    if cursor is None:
        return None
    match = _TIME_ID.fullmatch(cursor)
    if match is None or not math.isfinite(float(match.group(1))):
        raise BadRequest(NOT_ISSUED)
    return float(match.group(1)), match.group(2)
