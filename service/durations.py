"""Durations as people type them on a command line: a whole number and a unit, ``30s``, ``45m``, ``12h``,
``90d``, ``2w``."""

from __future__ import annotations

import re
from datetime import timedelta

UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
"""Seconds per unit letter."""

_DURATION = re.compile(r"([0-9]{1,9})([smhdw])")  # ASCII digits (\d takes any script's)


def parse_duration(text: str) -> timedelta:
    """``"90d"`` -> 90 days; ``"0d"`` is zero (callers that need a positive duration check it). ``ValueError``
    saying what is expected for anything else (a sign, a fraction, no unit, more than 9 digits)."""
    match = _DURATION.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"not a duration: {text!r} (a whole number and one of s, m, h, d, w: 30m, 12h, 90d)")
    try:
        return timedelta(seconds=int(match[1]) * UNITS[match[2]])
    except OverflowError:
        raise ValueError(f"duration too long: {text!r}") from None
