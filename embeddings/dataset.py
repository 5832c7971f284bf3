"""Run the full pipeline over a folder of images (the LFW layout) with cached detections.

Detection is the slow step (~30 ms per 250x250 image in batches), so detections are cached in a JSON file and
re-used when only alignment or encoding settings change. A miss of the detector is recorded as ``None``.
When the detector finds nothing, it runs again on a padded copy (faces that fill the frame,
:func:`embeddings.padding.detect_with_padding`), as the service does; misses in a cache written before that
retry existed, or with another border, are retried once too.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from embeddings.align import align_face
from embeddings.detector import FaceDetector, pick_primary
from embeddings.errors import InvalidImage
from embeddings.facenet import BatchedEncoder
from embeddings.images import decode_image
from embeddings.padding import DEFAULT_FILL, DEFAULT_PAD, detect_padded
from embeddings.types import Box, Detection, Landmarks

RETRY_PREFIX = "__padded_retry_misses__"
PADDED_RETRY_KEY = f"{RETRY_PREFIX}{DEFAULT_FILL}-{DEFAULT_PAD:g}"
"""Cache entry listing the misses that the padded retry, with today's border, has already been run on (not
retried again). Entries of another border (an older cache) are dropped, so their misses are retried."""

Progress = Callable[[int], None]
"""Called with the number of items just finished."""


def _noop(_: int) -> None:
    pass


def detection_to_json(d: Detection) -> dict[str, object]:
    return {"box": d.box.to_dict(), "landmarks": d.landmarks.to_dict(), "confidence": d.confidence}


def detection_from_json(obj: dict[str, object]) -> Detection:
    box = obj["box"]
    lm = obj["landmarks"]
    assert isinstance(box, dict) and isinstance(lm, dict)
    landmarks = Landmarks(**{k: (float(v[0]), float(v[1])) for k, v in lm.items()})
    return Detection(Box(**{k: float(v) for k, v in box.items()}), landmarks, float(obj["confidence"]))  # type: ignore[arg-type]


def read_detection_cache(cache_file: Path) -> tuple[dict[str, Detection | None], set[str]]:
    """A detection cache written by :func:`detect_primary_faces`: each image's primary face (``None``: a miss)
    and the misses the padded retry with today's border has been run on."""
    raw = json.loads(cache_file.read_text())
    retried = set(raw.pop(PADDED_RETRY_KEY, []))
    for key in [k for k in raw if k.startswith(RETRY_PREFIX)]:
        del raw[key]
    return {k: (detection_from_json(v) if v is not None else None) for k, v in raw.items()}, retried


def _read_image(path: Path) -> npt.NDArray[np.uint8] | None:
    """The decoded image, or ``None`` when the file cannot be read or is not an image."""
    try:
        return decode_image(path.read_bytes())
    except (InvalidImage, OSError):
        return None


def detect_primary_faces(
    root: Path,
    rel_paths: Sequence[str],
    *,
    detector: FaceDetector,
    cache_file: Path | None = None,
    batch_size: int = 16,
    progress: Progress = _noop,
) -> dict[str, Detection | None]:
    """The primary face (largest, most central) of each image, or ``None`` for a detector miss or for a file that
    cannot be read or is not an image (a stray text file named ``.jpg``). Cached."""
    cache: dict[str, Detection | None] = {}
    retried: set[str] = set()
    if cache_file is not None and cache_file.is_file():
        cache, retried = read_detection_cache(cache_file)
    todo = [p for p in dict.fromkeys(rel_paths) if p not in cache or (cache[p] is None and p not in retried)]
    progress(len(rel_paths) - len(todo))
    for start in range(0, len(todo), batch_size):
        chunk = todo[start : start + batch_size]
        decoded = {p: _read_image(root / p) for p in chunk}
        for p in [p for p, img in decoded.items() if img is None]:
            cache[p] = None
        chunk = [p for p, img in decoded.items() if img is not None]
        images = [img for img in decoded.values() if img is not None]
        same_size = len({img.shape for img in images}) == 1
        results = detector.detect_batch(images) if same_size else [detector.detect(i) for i in images]
        for p, img, dets in zip(chunk, images, results, strict=True):
            if not dets:  # the same detector again, on a padded copy
                dets = detect_padded(detector, img)
                retried.add(p)
            cache[p] = pick_primary(dets, img.shape)
        progress(len(decoded))
    if cache_file is not None and todo:
        out: dict[str, object] = {k: (detection_to_json(v) if v is not None else None) for k, v in cache.items()}
        out[PADDED_RETRY_KEY] = sorted(p for p in retried if cache.get(p) is None)
        cache_file.write_text(json.dumps(out))
    return cache


@dataclass(frozen=True, slots=True)
class AlignSettings:
    """The alignment/encoding choices an evaluation compares: margin (fraction of the box), eye-level
    rotation, and mirror-image test-time augmentation."""

    margin: float
    rotate: bool
    flip_tta: bool

    @property
    def label(self) -> str:
        return f"margin={self.margin:g} rotate={'on' if self.rotate else 'off'} flip={'on' if self.flip_tta else 'off'}"


def embed_detected(
    root: Path,
    detections: dict[str, Detection | None],
    *,
    encoder: BatchedEncoder,
    settings: AlignSettings,
    batch_size: int = 32,
    progress: Progress = _noop,
) -> dict[str, npt.NDArray[np.float32] | None]:
    """Align and encode every detected face; images with a miss map to ``None``."""
    out: dict[str, npt.NDArray[np.float32] | None] = {p: None for p, d in detections.items() if d is None}
    found = [(p, d) for p, d in detections.items() if d is not None]
    progress(len(out))
    for start in range(0, len(found), batch_size):
        chunk = found[start : start + batch_size]
        crops = np.stack(
            [
                align_face(decode_image((root / p).read_bytes()), d, margin=settings.margin, rotate=settings.rotate)
                for p, d in chunk
            ]
        )
        embs = encoder.encode(crops, flip_tta=settings.flip_tta)
        for (p, _), e in zip(chunk, embs, strict=True):
            out[p] = e
        progress(len(chunk))
    return out


def pair_distances(
    embeddings: dict[str, npt.NDArray[np.float32] | None], pairs: Sequence[tuple[str, str]]
) -> npt.NDArray[np.float64]:
    """L2 distance of each pair; a pair with a detector miss gets 2.0 (the maximum: predicted different)."""
    out = np.empty(len(pairs), dtype=np.float64)
    for i, (a, b) in enumerate(pairs):
        ea, eb = embeddings.get(a), embeddings.get(b)
        out[i] = 2.0 if ea is None or eb is None else float(np.linalg.norm(ea - eb))
    return out
