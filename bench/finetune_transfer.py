"""Does fine-tuning transfer to people never trained on? LFW split by person, the operating points serving uses.

Protocol (docs/FINETUNE.md, "Transfer to unseen people"):
- LFW people with >= 2 detected images (at most ``--max-per-person``, the first in name order) are split by person,
  seeded: ``--test-fraction`` of them are TEST people, never trained on and never used for validation; the rest
  are given to the trainer, which splits them again by person into train, selection and gate people.
- Domains: ``clean`` (the photos as they are) and ``lowres`` (every whole photo grayscale, area-downscaled to
  40x40, upscaled back, JPEG 30, before alignment: the face ends up ~17 px wide; detections from the clean photo).
- Test figures (``embeddings.training.operating``): all same-person and different-person pairs of the test
  people's images -> accuracy at the best threshold and TAR at FAR 1e-3; open-set identification with the first
  image of every test person enrolled and the others as probes (a probe is a non-mated search against the
  gallery without its own person) -> TPIR at FPIR 1%. 95% intervals: paired bootstrap over test people.
- Runs: ``prepare`` caches the frozen-head activations once per domain (untimed); ``train`` fits one recipe
  (``--distill``, ``--l2sp``, ``--lr``, ``--select``, ``--train-people`` for the people-count curve) and scores
  before/after on the test people; ``report`` prints the table.

    flock /tmp/facerec-bench.lock nice -n 10 .venv/bin/python bench/finetune_transfer.py prepare --domain lowres
    flock /tmp/facerec-bench.lock .venv/bin/python bench/finetune_transfer.py train --domain lowres --tag default
    .venv/bin/python bench/finetune_transfer.py report
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
LFW = ROOT.parent / "shared" / "data" / "lfw"
DETECTIONS = ROOT / "reports" / "lfw-detections.json"
OUT = ROOT / "reports" / "finetune-transfer"
WORK = ROOT / "reports" / "finetune-transfer-work"


def _people(args: argparse.Namespace) -> tuple[list[str], list[str]]:
    """(trainer people, test people): LFW people with >= 2 detected images, split by person, seeded."""
    raw = json.loads(args.detections.read_text())
    root = args.lfw / "lfw-deepfunneled"
    ok: list[str] = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        found = [f for f in sorted(folder.iterdir()) if raw.get(f"{folder.name}/{f.name}")]
        if len(found[: args.max_per_person]) >= 2:
            ok.append(folder.name)
    order = [ok[i] for i in np.random.default_rng(args.split_seed).permutation(len(ok))]
    n_test = round(args.test_fraction * len(order))
    return sorted(order[n_test:]), sorted(order[:n_test])


def _options(args: argparse.Namespace, test_people: list[str], fit: Any = None) -> Any:
    from embeddings.training.augment import degrade
    from embeddings.training.fit import FitConfig
    from embeddings.training.trainer import TrainOptions

    lowres = args.domain == "lowres"
    return TrainOptions(
        name=f"lfw-{args.domain}",
        fit=fit or FitConfig(),
        n_variants=args.variants,
        val_fraction=args.val_fraction,
        max_per_person=args.max_per_person,
        exclude=tuple(test_people),
        photo_transform=degrade if lowres else None,
        transform_name="degrade whole photo(gray, 40px, jpeg30)" if lowres else None,
        seed_detections=args.detections,
    )


def _test_set(args: argparse.Namespace, head: Any, options: Any, test_people: list[str]) -> tuple[Any, Any]:
    """Cached activations (crop, mirror) of the test people's images and their person labels."""
    from embeddings.dataset import detection_from_json
    from embeddings.training.cache import cache_key, cached_activations

    raw = json.loads(args.detections.read_text())
    root = args.lfw / "lfw-deepfunneled"
    items: list[tuple[str, Any]] = []
    labels: list[int] = []
    for i, person in enumerate(test_people):
        files = sorted(f"{person}/{f.name}" for f in (root / person).iterdir())
        found = [f for f in files if raw.get(f)][: args.max_per_person]
        for f in found:
            items.append((f, detection_from_json(raw[f])))
            labels.append(i)
    key = cache_key(kind="test", transform=options.transform_name, paths=[p for p, _ in items], cut=options.cut)
    acts = cached_activations(
        WORK / args.domain / f"acts-test-{key}.npy",
        head,
        root,
        items,
        n_variants=2,
        seed=options.seed,
        photo_transform=options.photo_transform,
        margin=options.margin,
        rotate=options.rotate,
        progress=_stage("cache test activations", len(items)),
    )
    return acts, np.array(labels, dtype=np.int64)


def _stage(name: str, total: int) -> Any:
    done = [0]
    last = [time.monotonic()]

    def advance(n: int) -> None:
        done[0] += n
        if time.monotonic() - last[0] > 30 or done[0] >= total:
            last[0] = time.monotonic()
            print(f"  {name}: {done[0]}/{total}", flush=True)

    return advance


def cmd_prepare(args: argparse.Namespace) -> None:
    from embeddings import weights as weights_mod
    from embeddings.training.trainer import prepare

    t0 = time.monotonic()
    train_people, test_people = _people(args)
    print(f"{len(train_people)} trainer people, {len(test_people)} test people", flush=True)
    options = _options(args, test_people)
    prepared = prepare(
        args.lfw / "lfw-deepfunneled", options, weights=weights_mod.resolve(), work_dir=WORK / args.domain, stage=_stage
    )
    acts, labels = _test_set(args, prepared.split.head, options, test_people)
    print(json.dumps(prepared.summary, indent=1))
    print(f"test: {len(acts)} images of {len(set(labels.tolist()))} people")
    print(f"prepared {args.domain} in {time.monotonic() - t0:.0f} s (untimed)")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    for name in ("prepare", "train", "report"):
        p = sub.add_parser(name)
        p.add_argument("--domain", choices=("clean", "lowres"), default="lowres")
        p.add_argument("--lfw", type=Path, default=LFW)
        p.add_argument("--detections", type=Path, default=DETECTIONS)
        p.add_argument("--max-per-person", type=int, default=4)
        p.add_argument("--test-fraction", type=float, default=0.5)
        p.add_argument("--val-fraction", type=float, default=0.3)
        p.add_argument("--variants", type=int, default=3)
        p.add_argument("--split-seed", type=int, default=0)
    return parser


def main() -> None:
    args = _parser().parse_args()
    {"prepare": cmd_prepare}[args.cmd](args)


if __name__ == "__main__":
    main()
