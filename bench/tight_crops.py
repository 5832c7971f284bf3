"""Faces that fill the frame: detector misses on tight crops, without and with the padded retry, and what the
retry finds on face-free images.

Photos: the 5-celebrity set (fetched with the weights), or LFW images of one half of its people (``--lfw-root``;
people split by a hash of their name: ``--half tune`` to choose settings, ``--half eval`` to report them). Each
photo is cropped to its detected face box shrunk by ``s`` of its size (``s = 0``: the face touches all four
borders; 0.1, 0.2 and 0.3 cut 5, 10 and 15% into the face on each side), then detected with the plain detector
and, where that finds nothing, by :func:`embeddings.padding.detect_with_padding` with each border fill and width
asked for. A face found by the retry is "right" when its embedding is within the verify threshold of the face
found on the whole photo (the crop's face, aligned and encoded as the service does). Face-free images: tiles of
scikit-learn's two sample photos (a temple, a flower) at several sizes; any face found on one is a false
detection. Usage:

    .venv/bin/python bench/tight_crops.py
    .venv/bin/python bench/tight_crops.py --lfw-root ../shared/data/lfw/lfw-deepfunneled --half eval --n 1000
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import time
from pathlib import Path

import numpy as np
import numpy.typing as npt

from embeddings import weights
from embeddings.analyzer import FaceAnalyzer
from embeddings.images import decode_image
from embeddings.padding import DEFAULT_FILL, DEFAULT_PAD, FILLS, detect_with_padding

Image = npt.NDArray[np.uint8]
TILE_SIDES = (48, 64, 96, 128, 160, 224, 320)


def in_half(person: str, half: str) -> bool:
    """Whether an LFW person belongs to ``half``: ``tune`` when the sha256 of the name starts with an even byte,
    else ``eval`` (settings are chosen on one half and reported on the other)."""
    return (hashlib.sha256(person.encode()).digest()[0] % 2) == (half == "eval")


def lfw_photos(root: Path, half: str, n: int, seed: int) -> list[Path]:
    """``n`` random LFW images (one per person at most) of the people in ``half`` (:func:`in_half`)."""
    people = [p for p in sorted(root.iterdir()) if p.is_dir() and in_half(p.name, half)]
    rng = random.Random(seed)
    rng.shuffle(people)
    return [rng.choice(sorted(p.glob("*.jpg"))) for p in people[:n]]


def celebrity_photos() -> list[Path]:
    return sorted(weights.sample_dataset_path().glob("*/*/*.jpg"))


def tight_crop(image: Image, box: object, shrink: float) -> Image:
    """``image`` cut to ``box`` shrunk by ``shrink`` of its width and height (half on each side)."""
    x, y, w, h = (float(getattr(box, k)) for k in ("x", "y", "width", "height"))
    x0, y0 = int(max(x + shrink * w / 2, 0)), int(max(y + shrink * h / 2, 0))
    x1, y1 = int(min(x + w - shrink * w / 2, image.shape[1])), int(min(y + h - shrink * h / 2, image.shape[0]))
    return np.ascontiguousarray(image[y0:y1, x0:x1])


def face_free_tiles(step: float = 0.75) -> dict[str, Image]:
    """Tiles of scikit-learn's sample photos, each side in :data:`TILE_SIDES`, overlapping by ``1 - step``."""
    from sklearn.datasets import load_sample_images

    out: dict[str, Image] = {}
    for name, photo in zip(("china", "flower"), load_sample_images().images, strict=True):
        for side in TILE_SIDES:
            stride = max(int(side * step), 1)
            for y in range(0, photo.shape[0] - side + 1, stride):
                for x in range(0, photo.shape[1] - side + 1, stride):
                    out[f"{name} {side}px at ({x},{y})"] = np.ascontiguousarray(photo[y : y + side, x : x + side])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shrink", default="0,0.1,0.2,0.3", help="comma-separated shrink fractions of the box")
    parser.add_argument(
        "--pads", default=str(DEFAULT_PAD), help="comma-separated border widths (share of the longer side)"
    )
    parser.add_argument("--fills", default=DEFAULT_FILL, help=f"comma-separated border fills of {', '.join(FILLS)}")
    parser.add_argument("--lfw-root", type=Path, help="LFW images instead of the 5-celebrity set")
    parser.add_argument("--half", choices=("tune", "eval"), default="eval")
    parser.add_argument("--n", type=int, default=1000, help="LFW photos (one per person)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-face-free", action="store_true", help="skip the face-free tiles")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    variants = [(fill, float(pad)) for fill in args.fills.split(",") for pad in args.pads.split(",")]
    analyzer = FaceAnalyzer()
    detector = analyzer.detector
    files = lfw_photos(args.lfw_root, args.half, args.n, args.seed) if args.lfw_root else celebrity_photos()
    images = [decode_image(p.read_bytes()) for p in files]
    found = [detector.detect(img)[:1] for img in images]
    boxes = [f[0].box if f else None for f in found]
    whole = [
        analyzer.faces_from_detections(img, f)[0].embedding if f else None for img, f in zip(images, found, strict=True)
    ]
    source = f"LFW {args.half} half" if args.lfw_root else "5-celebrity set"
    print(f"{source}: {len(images)} photos, {sum(b is None for b in boxes)} without a face at full size")
    report: dict[str, object] = {"source": source, "photos": len(images), "shrink": {}, "face_free": {}}
    for shrink in (float(s) for s in args.shrink.split(",")):
        crops = [
            (tight_crop(img, b, shrink), e)
            for img, b, e in zip(images, boxes, whole, strict=True)
            if b is not None and e is not None
        ]
        missed = [(c, e) for c, e in crops if not detector.detect(c)]
        row: dict[str, object] = {"crops": len(crops), "plain_misses": len(missed)}
        parts = []
        for fill, pad in variants:
            still = right = 0
            seconds = 0.0
            for crop, reference in missed:
                start = time.perf_counter()
                faces = detect_with_padding(detector, crop, pad=pad, fill=fill)
                seconds += time.perf_counter() - start
                if not faces:
                    still += 1
                    continue
                embedding = analyzer.faces_from_detections(crop, faces[:1])[0].embedding
                right += float(np.linalg.norm(embedding - reference)) <= analyzer.threshold
            ms = 1000 * seconds / max(len(missed), 1)
            row[f"{fill} {pad:g}"] = {"missed": still, "found_right": right}
            parts.append(f"{fill} {pad:g}: {still} ({right} found right; {ms:.0f} ms per miss)")
        report["shrink"][f"{shrink:g}"] = row  # type: ignore[index]
        print(
            f"shrink {shrink:g}: {len(crops)} crops, plain misses {len(missed)}; still missed with the retry: "
            + "; ".join(parts)
        )
    if not args.no_face_free:
        tiles = face_free_tiles()
        plain = [name for name, t in tiles.items() if detector.detect(t)]
        report["face_free"] = {"tiles": len(tiles), "plain": plain}
        print(f"face-free tiles: {len(tiles)}; plain detector finds a face on {len(plain)}: {plain}")
        for fill, pad in variants:
            extra = [
                name
                for name, t in tiles.items()
                if name not in plain and detect_with_padding(detector, t, pad=pad, fill=fill)
            ]
            report["face_free"][f"{fill} {pad:g}"] = extra  # type: ignore[index]
            print(f"  retry {fill} {pad:g} adds {len(extra)}: {extra}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
