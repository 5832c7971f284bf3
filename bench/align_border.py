"""What the aligned crop holds beyond the image border: recognition of tight crops with a black or a grey fill.

LFW people of one half (``bench.tight_crops.in_half``) with two or more photos: photo A is cropped to
its detected face box cut into by ``s`` of the box (``s = 0``: the face touches the borders, so the crop's 15%
margin lies outside the image), found with the service's detector (padded retry included), aligned with each
fill of :data:`embeddings.align.BORDER_FILL` asked for and encoded; photo B, whole, is the enrolled face. Genuine
pairs: A and B of one person; impostor pairs: A of one person, B of every other. Reports TAR at FAR 1e-3 (the
threshold from the impostor pairs), and TAR and FAR at the model's threshold. Usage:

    .venv/bin/python bench/align_border.py --lfw-root ../shared/data/lfw/lfw-deepfunneled --half eval
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

import numpy as np
import numpy.typing as npt

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import embeddings.align as align
from bench.tight_crops import in_half, tight_crop
from embeddings.analyzer import FaceAnalyzer
from embeddings.images import decode_image
from embeddings.types import Detection

FILLS = {"black": (0, 0, 0), "grey": (128, 128, 128)}
Pair = tuple[npt.NDArray[np.uint8], Detection, npt.NDArray[np.uint8], Detection]


def people_pairs(root: Path, half: str, n: int, seed: int, analyzer: FaceAnalyzer) -> list[Pair]:
    """The first two photos, with their detected faces, of up to ``n`` random people of ``half``."""
    people = [
        p for p in sorted(root.iterdir()) if p.is_dir() and in_half(p.name, half) and len(list(p.glob("*.jpg"))) >= 2
    ]
    random.Random(seed).shuffle(people)
    pairs = []
    for person in people[:n]:
        a, b = (decode_image(f.read_bytes()) for f in sorted(person.glob("*.jpg"))[:2])
        found_a, found_b = analyzer.detector.detect(a), analyzer.detector.detect(b)
        if found_a and found_b:
            pairs.append((a, found_a[0], b, found_b[0]))
    return pairs


def figures(
    analyzer: FaceAnalyzer, pairs: list[Pair], shrink: float
) -> tuple[dict[str, float], npt.NDArray[np.float32]]:
    """TAR / FAR of tight crops of photo A against whole photos B with the current fill, and the probes'
    embeddings (NaN rows where no face was found)."""
    enrolled = np.stack([analyzer.faces_from_detections(b, [db])[0].embedding for _, _, b, db in pairs])
    probes = []
    for a, da, _, _ in pairs:
        crop = tight_crop(a, da.box, shrink)
        faces = analyzer.detect(crop)
        probes.append(
            analyzer.faces_from_detections(crop, faces[:1])[0].embedding if faces else np.full(128, np.nan, np.float32)
        )
    probe_rows = np.stack(probes)
    distances = np.linalg.norm(probe_rows[:, None] - enrolled[None], axis=2)
    genuine = np.diag(distances)
    impostor = distances[~np.eye(len(distances), dtype=bool)]
    impostor = impostor[~np.isnan(impostor)]
    at_1e3 = float(np.quantile(impostor, 1e-3))
    row = {
        "genuine_mean": float(np.nanmean(genuine)),
        "tar_at_far_1e-3": float(np.mean(genuine <= at_1e3)),
        "tar_at_model_threshold": float(np.mean(genuine <= analyzer.threshold)),
        "far_at_model_threshold": float(np.mean(impostor <= analyzer.threshold)),
    }
    return row, probe_rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lfw-root", type=Path, required=True)
    parser.add_argument("--half", choices=("tune", "eval"), default="eval")
    parser.add_argument("--n", type=int, default=500, help="people (two photos each)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--shrink", default="0,0.1,0.2", help="comma-separated shrink fractions of the box")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    analyzer = FaceAnalyzer()
    pairs = people_pairs(args.lfw_root, args.half, args.n, args.seed, analyzer)
    print(f"LFW {args.half} half: {len(pairs)} people")
    report: dict[str, dict[str, dict[str, float]]] = {}
    for shrink in (float(s) for s in args.shrink.split(",")):
        probes = {}
        for name, fill in FILLS.items():
            align.BORDER_FILL = fill  # read by align_face at each call
            row, probes[name] = figures(analyzer, pairs, shrink)
            report.setdefault(f"{shrink:g}", {})[name] = row
            print(
                f"shrink {shrink:g} {name:5s}: genuine mean {row['genuine_mean']:.3f}, TAR@FAR1e-3 "
                f"{row['tar_at_far_1e-3']:.3f}, at the model threshold TAR {row['tar_at_model_threshold']:.3f} "
                f"FAR {row['far_at_model_threshold']:.4f}"
            )
        moved = np.linalg.norm(probes["black"] - probes["grey"], axis=1)
        report[f"{shrink:g}"]["black_to_grey"] = {"mean": float(np.nanmean(moved)), "max": float(np.nanmax(moved))}
        print(f"  the same crop, black vs grey fill: L2 mean {np.nanmean(moved):.3f}, max {np.nanmax(moved):.3f}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"people": len(pairs), "half": args.half, "results": report}, indent=1))


if __name__ == "__main__":
    main()
