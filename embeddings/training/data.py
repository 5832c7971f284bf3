"""Training data: a folder per person (the LFW layout), a split by person, and aligned crops.

Crops come from the serving code path: ``decode_image`` -> MTCNN primary face (``detect_primary_faces``, whose
JSON cache is reused) -> ``align_face`` with the serving margin and rotation. ``prewhiten`` is applied later, just
before the network (see ``cache.py``), exactly as ``FaceNetEncoder.encode`` does.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from embeddings.align import DEFAULT_MARGIN, align_face
from embeddings.dataset import detect_primary_faces
from embeddings.images import decode_image
from embeddings.types import Detection

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp"})


@dataclass(frozen=True, slots=True)
class PeopleSplit:
    """Image paths (relative to the root, ``<person>/<file>``) per person, split by person into train and val."""

    train: dict[str, list[str]]
    val: dict[str, list[str]]

    def summary(self) -> dict[str, int]:
        return {
            "train_people": len(self.train),
            "train_images": sum(len(v) for v in self.train.values()),
            "val_people": len(self.val),
            "val_images": sum(len(v) for v in self.val.values()),
        }


def scan_people(
    root: Path,
    *,
    min_images: int = 2,
    max_per_person: int | None = None,
    exclude: Sequence[str] = (),
) -> dict[str, list[str]]:
    """``{person: [relative image paths]}`` for every sub-folder of ``root`` with at least ``min_images`` images,
    sorted; at most ``max_per_person`` (the first ones in name order) and none of the ``exclude``d people."""
    skip = set(exclude)
    out: dict[str, list[str]] = {}
    for folder in sorted(p for p in Path(root).iterdir() if p.is_dir()):
        if folder.name in skip:
            continue
        files = sorted(
            f"{folder.name}/{f.name}" for f in folder.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file()
        )
        if max_per_person is not None:
            files = files[:max_per_person]
        if len(files) >= min_images:
            out[folder.name] = files
    return out


def split_people(people: dict[str, list[str]], *, val_fraction: float, seed: int) -> PeopleSplit:
    """Split by person (never by image): a seeded shuffle puts ``val_fraction`` of the people (at least 2 when
    there are 4 or more, else 1) in validation."""
    names = sorted(people)
    if len(names) < 2:
        raise ValueError(f"need at least 2 people to split, found {len(names)}")
    rng = np.random.default_rng(seed)
    order = [names[i] for i in rng.permutation(len(names))]
    n_val = max(2 if len(names) >= 4 else 1, round(val_fraction * len(names)))
    n_val = min(n_val, len(names) - 1)
    val = set(order[:n_val])
    return PeopleSplit(
        train={p: people[p] for p in names if p not in val},
        val={p: people[p] for p in names if p in val},
    )


def detect(
    root: Path,
    rel_paths: Sequence[str],
    *,
    cache_file: Path | None,
    progress: Callable[[int], None] = lambda _: None,
) -> dict[str, Detection | None]:
    """The primary face of each image with the serving detector, cached in ``cache_file`` (dataset.py format)."""
    from embeddings.detector import FaceDetector

    if cache_file is not None:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
    return detect_primary_faces(root, rel_paths, detector=FaceDetector(), cache_file=cache_file, progress=progress)


def load_crop(
    root: Path,
    rel_path: str,
    detection: Detection,
    *,
    margin: float = DEFAULT_MARGIN,
    rotate: bool = True,
    photo_transform: Callable[[npt.NDArray[np.uint8]], npt.NDArray[np.uint8]] | None = None,
) -> npt.NDArray[np.uint8]:
    """The aligned 160x160 RGB uint8 crop of one detected face, exactly as serving makes it.

    ``photo_transform`` (e.g. a simulated camera) alters the whole decoded photo before alignment; the detection
    (from the original photo) is used as is, so the photo must keep its size."""
    image = decode_image((root / rel_path).read_bytes())
    if photo_transform is not None:
        image = photo_transform(image)
    return align_face(image, detection, margin=margin, rotate=rotate)


def validation_pairs(
    people: dict[str, list[str]], *, max_pairs: int, seed: int
) -> tuple[list[tuple[str, str]], npt.NDArray[np.bool_]]:
    """Same-person pairs (all, or a seeded sample of ``max_pairs // 2``) and as many different-person pairs.

    Returns ``(pairs, same)``; every path appears in ``people``.
    """
    rng = np.random.default_rng(seed)
    same_pairs = [
        (imgs[i], imgs[j]) for imgs in people.values() for i in range(len(imgs)) for j in range(i + 1, len(imgs))
    ]
    half = max_pairs // 2
    if len(same_pairs) > half:
        same_pairs = [same_pairs[i] for i in sorted(rng.choice(len(same_pairs), half, replace=False))]
    names = sorted(people)
    diff_pairs: set[tuple[str, str]] = set()
    if len(names) >= 2:
        attempts = 0
        while len(diff_pairs) < len(same_pairs) and attempts < 50 * max(len(same_pairs), 1):
            attempts += 1
            a, b = rng.choice(len(names), 2, replace=False)
            pa, pb = people[names[a]], people[names[b]]
            diff_pairs.add((pa[int(rng.integers(len(pa)))], pb[int(rng.integers(len(pb)))]))
    pairs = same_pairs + sorted(diff_pairs)
    same = np.array([True] * len(same_pairs) + [False] * len(diff_pairs), dtype=bool)
    return pairs, same
