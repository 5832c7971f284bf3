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

    nice -n 10 .venv/bin/python bench/finetune_transfer.py prepare --domain lowres
    .venv/bin/python bench/finetune_transfer.py train --domain lowres --tag default
    .venv/bin/python bench/finetune_transfer.py report
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import numpy.typing as npt

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `bench` when run as a script

from bench.finetune import prepare_lfw, print_stage
from bench.paths import LFW, REPORTS

DETECTIONS = REPORTS / "lfw-detections.json"
OUT = REPORTS / "finetune-transfer"
WORK = REPORTS / "finetune-transfer-work"


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
        progress=print_stage("cache test activations", len(items)),
    )
    return acts, np.array(labels, dtype=np.int64)


def cmd_prepare(args: argparse.Namespace) -> None:
    t0 = time.monotonic()
    train_people, test_people = _people(args)
    print(f"{len(train_people)} trainer people, {len(test_people)} test people", flush=True)
    options = _options(args, test_people)
    prepared = prepare_lfw(args.lfw, options, WORK / args.domain)
    print(json.dumps(prepared.summary, indent=1))
    if not args.skip_test:  # else the first ``train`` caches the test people
        acts, labels = _test_set(args, prepared.split.head, options, test_people)
        print(f"test: {len(acts)} images of {len(set(labels.tolist()))} people")
    print(f"prepared {args.domain} in {time.monotonic() - t0:.0f} s (untimed)")


RECIPES: dict[str, dict[str, Any]] = {
    "old": {"learning_rate": 5e-5, "distill": 0.0, "l2sp": 0.0, "selection": "accuracy"},
    "score": {"learning_rate": 5e-5, "distill": 0.0, "l2sp": 0.0, "selection": "score"},
    "distill": {"learning_rate": 5e-5, "distill": 1.0, "l2sp": 0.0, "selection": "score"},
    "distill-lowlr": {"learning_rate": 2e-5, "distill": 1.0, "l2sp": 0.0, "selection": "score"},
    "l2sp": {"learning_rate": 5e-5, "distill": 0.0, "l2sp": 1e-2, "selection": "score"},
}
"""Named recipes (FitConfig fields); the rest of FitConfig is its default, ``--max-minutes`` and ``--max-steps``."""


def _subset_people(labels: npt.NDArray[np.int64], n: int, seed: int) -> npt.NDArray[np.bool_]:
    people = np.unique(labels)
    keep = np.random.default_rng([seed, 2]).permutation(people)[:n]
    return np.isin(labels, keep)


def cmd_train(args: argparse.Namespace) -> None:
    """Each recipe x train-people count: fit, gate, and score before/after on the test people."""
    from embeddings import weights as weights_mod
    from embeddings.training.fit import FitConfig, StepReport, embed_cached, fit
    from embeddings.training.gate import judge
    from embeddings.training.operating import compare, score_set
    from embeddings.training.trainer import prepare

    _, test_people = _people(args)
    options = _options(args, test_people)
    weights = weights_mod.resolve()
    prepared = prepare(args.lfw / "lfw-deepfunneled", options, weights=weights, work_dir=WORK / args.domain)
    split = prepared.split
    start = [v.numpy().copy() for v in split.tail.trainable_variables]
    test_acts, test_labels = _test_set(args, split.head, options, test_people)
    test_before = score_set(embed_cached(split.tail, test_acts), test_labels)
    gate_before = score_set(embed_cached(split.tail, prepared.gate.acts), prepared.gate.labels)
    OUT.mkdir(parents=True, exist_ok=True)
    counts = [int(c) for c in args.train_people.split(",")] if args.train_people else [0]
    for recipe in args.recipes.split(","):
        for count in counts:
            for v, a in zip(split.tail.trainable_variables, start, strict=True):
                v.assign(a)
            mask = (
                _subset_people(prepared.train_labels, count, args.split_seed)
                if count
                else np.ones(len(prepared.train_labels), dtype=bool)
            )
            config = FitConfig(
                **RECIPES[recipe], max_minutes=args.max_minutes, max_steps=args.max_steps, eval_every=args.eval_every
            )

            def report(r: StepReport) -> None:
                if r.step % 100 == 0:
                    print(
                        f"  step {r.step}: loss {r.loss:.4f} active {r.active:.3f} val score {r.val_score}", flush=True
                    )

            t0 = time.monotonic()
            result = fit(
                split,
                prepared.train_acts[mask],
                prepared.train_labels[mask],
                prepared.selection,
                config,
                on_step=report,
            )
            fit_s = time.monotonic() - t0
            gate = compare(gate_before, score_set(embed_cached(split.tail, prepared.gate.acts), prepared.gate.labels))
            gate["decision"] = judge(gate)
            test = compare(test_before, score_set(embed_cached(split.tail, test_acts), test_labels))
            tag = f"{args.domain}-{recipe}" + (f"-p{count}" if count else "")
            out = {
                "domain": args.domain,
                "recipe": recipe,
                "config": {k: getattr(config, k) for k in ("learning_rate", "distill", "l2sp", "selection")},
                "train_people": len(np.unique(prepared.train_labels[mask])),
                "train_images": int(mask.sum()),
                "data": prepared.summary,
                "steps": result.steps,
                "best_step": result.best_step,
                "stopped": result.stopped,
                "fit_seconds": fit_s,
                "selection": {"before": result.before, "after": result.after},
                "gate": gate,
                "test": test,
                "cores": os.cpu_count(),
            }
            (OUT / f"{tag}.json").write_text(json.dumps(out, indent=1))
            d, ci = test["delta"], test["delta_ci95"]
            print(
                f"{tag}: gate {gate['decision']['accepted']} ({gate['decision']['reason']}); steps {result.steps} "
                f"best {result.best_step}; test deltas "
                + ", ".join(f"{m} {d[m]:+.4f} [{ci[m][0]:+.4f},{ci[m][1]:+.4f}]" for m in d),
                flush=True,
            )


def cmd_report(args: argparse.Namespace) -> None:
    """The markdown table of every result file (test people; the gate's verdict; what a user ends up with)."""
    print(
        "| run | train people | steps (best) | gate | test accuracy | TAR@FAR1e-3 | TPIR@FPIR1% | "
        "change in TAR [95%] | change in TPIR [95%] |"
    )
    print("|" + "---|" * 9)
    for f in sorted(OUT.glob("*.json")):
        r = json.loads(f.read_text())
        t = r["test"]
        b, a, d, ci = t["before"], t["after"], t["delta"], t["delta_ci95"]
        gate = "accepted" if r["gate"]["decision"]["accepted"] else "rejected"

        def pair(m: str, b: dict[str, Any] = b, a: dict[str, Any] = a) -> str:
            return f"{b[m]:.4f} -> {a[m]:.4f}"

        def delta(m: str, d: dict[str, Any] = d, ci: dict[str, Any] = ci) -> str:
            return f"{d[m]:+.4f} [{ci[m][0]:+.4f}, {ci[m][1]:+.4f}]"

        print(
            f"| {f.stem} | {r['train_people']} | {r['steps']} ({r['best_step']}) | {gate} | {pair('accuracy')} | "
            f"{pair('tar_at_far_1e-3')} | {pair('tpir_at_fpir_1e-2')} | {delta('tar_at_far_1e-3')} | "
            f"{delta('tpir_at_fpir_1e-2')} |"
        )


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
        if name == "prepare":
            p.add_argument("--skip-test", action="store_true", help="cache the trainer's people only")
        if name == "train":
            p.add_argument("--recipes", default="distill", help=f"comma-separated, of {', '.join(RECIPES)}")
            p.add_argument("--train-people", default="", help="comma-separated training-people counts (curve)")
            p.add_argument("--max-minutes", type=float, default=4.0)
            p.add_argument("--max-steps", type=int, default=4000)
            p.add_argument("--eval-every", type=int, default=100)
    return parser


def main() -> None:
    args = _parser().parse_args()
    {"prepare": cmd_prepare, "train": cmd_train, "report": cmd_report}[args.cmd](args)


if __name__ == "__main__":
    main()
