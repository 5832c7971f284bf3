"""Helpers for the fault tests: distinct JPEG bytes of the same photo, and gallery consistency checks."""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image

PEOPLE = ("ben_afflek", "elton_john", "jerry_seinfeld", "madonna")


def photos(root: Path, person: str) -> list[Path]:
    return sorted((root / "train" / person).glob("*.jpg"))


def variant(path: Path, n: int) -> bytes:
    """The photo re-encoded with a JPEG comment depending on ``n``: new bytes (enrolment rejects an image whose
    sha256 is already enrolled) of the same pixels, so the quality verdict and the embedding do not change."""
    buf = io.BytesIO()
    Image.open(path).convert("RGB").save(buf, format="JPEG", quality=95, comment=f"facerec-fault-{n}")
    return buf.getvalue()
