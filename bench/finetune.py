"""Proof that fine-tuning helps: LFW clean and a degraded "other camera", triplet vs contrastive.

Protocol (see docs/BENCHMARKS.md, "Fine-tuning"):
- Training people: LFW people with >= 2 images who appear in no pair of View 1's ``pairsDevTest.txt`` (at most
  ``--max-per-person`` images each, the first in name order), split by person into train and validation.
- Test: the 1,000 pairs of ``pairsDevTest.txt``, embedded with the serving pipeline (MTCNN detections reused from
  ``--detections``, align margin 0.15 + eye rotation, prewhiten, flip test-time augmentation).
- Degraded domains (``embeddings.training.augment.degrade``: grayscale, area-downscaled to 40x40, upscaled back
  bilinearly, JPEG quality 30; deterministic; train, validation and test images alike; detections always come
  from the clean photo): ``degraded`` degrades every aligned 160x160 crop (the face ends up ~35 px wide);
  ``lowres`` degrades the whole 250x250 photo before alignment (the face ends up ~17 px wide).
- Accuracy: (1) the View 1 convention of ``facerec eval lfw``: the threshold that maximises accuracy on the
  1,000 test pairs themselves (optimistic, the same rule before and after); (2) the honest one: the threshold
  chosen on the validation people's pairs (the model card's), applied unchanged to the test pairs.

Steps (caching and evaluation are untimed, run them with ``nice -n 19``; training runs are timed, under the lock):

    nice -n 19 .venv/bin/python bench/finetune.py prepare --domain clean
    nice -n 19 .venv/bin/python bench/finetune.py prepare --domain degraded
    .venv/bin/python bench/finetune.py train --domain degraded --loss triplet
    .venv/bin/python bench/finetune.py train --domain degraded --loss contrastive
    .venv/bin/python bench/finetune.py train --domain clean --loss triplet
    nice -n 19 .venv/bin/python bench/finetune.py verify --domain clean --loss triplet
    .venv/bin/python bench/finetune.py report
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import numpy.typing as npt

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `bench` when run as a script

from bench.paths import LFW, REPORTS

if TYPE_CHECKING:
    from embeddings.training.trainer import Prepared, TrainOptions

DETECTIONS = REPORTS / "view2" / "detections.json"
OUT = REPORTS / "finetune"
WORK = REPORTS / "finetune-work"
"""Prepared activations and checkpoints (large; reused between runs of one domain)."""


def _options(args: argparse.Namespace, loss: str = "triplet") -> Any:
    from embeddings.evaluation import read_pairs
    from embeddings.training.augment import degrade
    from embeddings.training.fit import FitConfig
    from embeddings.training.trainer import TrainOptions

    test = read_pairs(args.lfw / "pairsDevTest.txt")
    excluded = tuple(sorted({p.split("/")[0] for pr in test for p in (pr.a, pr.b)}))
    degraded = args.domain == "degraded"
    lowres = args.domain == "lowres"
    return TrainOptions(
        name=f"lfw-{args.domain}-{loss}",
        fit=FitConfig(
            loss=loss,
            max_minutes=getattr(args, "max_minutes", 8.0),
            learning_rate=getattr(args, "lr", 5e-5),
            max_steps=getattr(args, "max_steps", 4000),
            eval_every=getattr(args, "eval_every", 100),
        ),
        max_per_person=args.max_per_person,
        exclude=excluded,
        val_fraction=0.15,
        transform=degrade if degraded else None,
        photo_transform=degrade if lowres else None,
        transform_name=(
            "degrade(gray, 40px, jpeg30)" if degraded else "degrade whole photo(gray, 40px, jpeg30)" if lowres else None
        ),
        seed_detections=args.detections,
    )


def _test_set(args: argparse.Namespace, head: Any, options: Any) -> tuple[Any, npt.NDArray[np.bool_], list[str]]:
    """Cached activations of every pairsDevTest image (variants: crop, mirror) and the pairs as indices."""
    from embeddings.dataset import detection_from_json
    from embeddings.evaluation import read_pairs
    from embeddings.training.cache import cache_key, cached_activations
    from embeddings.training.fit import PairSet

    pairs = read_pairs(args.lfw / "pairsDevTest.txt")
    paths = sorted({p for pr in pairs for p in (pr.a, pr.b)})
    raw = json.loads(args.detections.read_text())
    dets = {p: detection_from_json(raw[p]) if raw.get(p) else None for p in paths}
    found = [p for p in paths if dets[p] is not None]
    key = cache_key(kind="test", transform=options.transform_name, paths=found, cut=options.cut)
    acts = cached_activations(
        WORK / args.domain / f"acts-test-{key}.npy",
        head,
        args.lfw / "lfw-deepfunneled",
        [(p, dets[p]) for p in found],  # type: ignore[misc]
        n_variants=2,
        seed=options.seed,
        transform=options.transform,
        photo_transform=options.photo_transform,
        margin=options.margin,
        rotate=options.rotate,
    )
    index = {p: i for i, p in enumerate(found)}
    ok = np.array([pr.a in index and pr.b in index for pr in pairs])
    same = np.array([pr.same for pr in pairs])
    a = np.array([index.get(pr.a, 0) for pr in pairs], dtype=np.int64)
    b = np.array([index.get(pr.b, 0) for pr in pairs], dtype=np.int64)
    missed = [p for p in paths if dets[p] is None]
    return (PairSet(acts, a, b, same), ok, missed)


def _test_metrics(tail: Any, test: Any, ok: npt.NDArray[np.bool_], val_threshold: float) -> dict[str, Any]:
    from embeddings.evaluation import accuracy_at
    from embeddings.training.fit import embed_cached, pair_distances, verification

    d = np.where(ok, pair_distances(embed_cached(tail, test.acts), test), 2.0)
    m = verification(d, test.same)
    return {
        "accuracy_best_threshold": m["accuracy"],
        "best_threshold": m["threshold"],
        "accuracy_at_val_threshold": accuracy_at(d, test.same, val_threshold),
        "val_threshold": val_threshold,
        "tar_at_far_1e-3": m["tar_at_far_1e-3"],
        "pairs": m["pairs"],
    }


def prepare_lfw(lfw: Path, options: TrainOptions, work_dir: Path) -> Prepared:
    """``trainer.prepare`` on ``lfw/lfw-deepfunneled`` with the pretrained weights, printing its progress."""
    from embeddings import weights as weights_mod
    from embeddings.training.trainer import prepare

    return prepare(
        lfw / "lfw-deepfunneled", options, weights=weights_mod.resolve(), work_dir=work_dir, stage=print_stage
    )


def cmd_prepare(args: argparse.Namespace) -> None:
    from embeddings import weights as weights_mod
    from embeddings.training.network import split_model

    t0 = time.monotonic()
    options = _options(args)
    pretrained = split_model(weights_mod.resolve(), options.cut)
    test, ok, _ = _test_set(args, pretrained.head, options)  # first: the pretrained model's figure on this domain
    print("pretrained on pairsDevTest:", json.dumps(_test_metrics(pretrained.tail, test, ok, 1.075)), flush=True)
    prepared = prepare_lfw(args.lfw, options, WORK / args.domain)
    print(json.dumps(prepared.summary, indent=1))
    print(f"prepared {args.domain} in {time.monotonic() - t0:.0f} s (untimed)")


def print_stage(name: str, total: int) -> Any:
    """A training ``Stage``: ``advance(n)`` prints ``name: done/total`` at most every 30 s and at the end."""
    done = [0]
    last = [time.monotonic()]

    def advance(n: int) -> None:
        done[0] += n
        if time.monotonic() - last[0] > 30 or done[0] >= total:
            last[0] = time.monotonic()
            print(f"  {name}: {done[0]}/{total}", flush=True)

    return advance


def cmd_train(args: argparse.Namespace) -> None:
    from embeddings import weights as weights_mod
    from embeddings.training.cache import cache_key
    from embeddings.training.fit import StepReport, embed_cached
    from embeddings.training.gate import judge
    from embeddings.training.model_dir import make_model_id, save_model_dir
    from embeddings.training.network import split_model
    from embeddings.training.operating import compare, score_set
    from embeddings.training.trainer import fit_prepared, make_card, prepare

    wall0 = time.monotonic()
    options = _options(args, args.loss)
    weights = weights_mod.resolve()
    prepared = prepare(args.lfw / "lfw-deepfunneled", options, weights=weights, work_dir=WORK / args.domain)
    test, ok, missed = _test_set(args, prepared.split.head, options)
    pretrained = split_model(weights, options.cut)
    load_s = time.monotonic() - wall0

    def report(r: StepReport) -> None:
        if r.step % 50 == 0:
            acc = "-" if r.val_accuracy is None else f"{r.val_accuracy:.4f}"
            print(f"  step {r.step}: loss {r.loss:.4f} active {r.active:.3f} val_acc {acc}", flush=True)

    run = cache_key(loss=args.loss, lr=options.fit.learning_rate, tag=args.tag)
    gate_set = prepared.gate
    gate_before = score_set(embed_cached(prepared.split.tail, gate_set.acts), gate_set.labels)
    t0 = time.monotonic()
    checkpoints = WORK / args.domain / "checkpoints" / run
    result = fit_prepared(prepared, options, checkpoint_dir=checkpoints, resume=args.resume, on_step=report)
    fit_s = time.monotonic() - t0
    model_id = make_model_id(options.name)
    gate = compare(gate_before, score_set(embed_cached(prepared.split.tail, gate_set.acts), gate_set.labels))
    gate["decision"] = judge(gate)
    card = make_card(model_id, options, prepared, result, gate=gate, threshold=float(gate["after"]["threshold"]))
    model_dir = save_model_dir(prepared.split.full, card, args.models_root)
    before = _test_metrics(pretrained.tail, test, ok, float(result.before["threshold"]))
    after = _test_metrics(prepared.split.tail, test, ok, float(result.after["threshold"]))
    out = {
        "domain": args.domain,
        "loss": args.loss,
        "model_dir": str(model_dir),
        "model_id": model_id,
        "data": prepared.summary,
        "params": card["params"],
        "validation": card["validation"],
        "test_pairsDevTest": {"before": before, "after": after, "detector_misses": missed},
        "delta_points_best_threshold": 100 * (after["accuracy_best_threshold"] - before["accuracy_best_threshold"]),
        "delta_points_val_threshold": 100 * (after["accuracy_at_val_threshold"] - before["accuracy_at_val_threshold"]),
        "train_seconds": fit_s,
        "load_seconds": load_s,
        "process_wall_seconds": time.monotonic() - wall0,
        "cores": os.cpu_count(),
    }
    OUT.mkdir(parents=True, exist_ok=True)
    tag = f"-{args.tag}" if args.tag else ""
    (OUT / f"{args.domain}-{args.loss}{tag}.json").write_text(json.dumps(out, indent=1))
    print(json.dumps({k: out[k] for k in ("model_dir", "test_pairsDevTest", "train_seconds")}, indent=1))


def cmd_verify(args: argparse.Namespace) -> None:
    """Re-embed the test images with the SAVED model directory through FaceNetEncoder (the full network, as the
    service loads it) and compare with the cached-tail figures of the training run."""
    from embeddings.dataset import detection_from_json
    from embeddings.evaluation import read_pairs
    from embeddings.facenet import FaceNetEncoder
    from embeddings.training.data import load_crop
    from embeddings.training.fit import verification
    from embeddings.training.model_dir import read_card, weights_file

    run = json.loads((OUT / f"{args.domain}-{args.loss}.json").read_text())
    model_dir = Path(run["model_dir"])
    read_card(model_dir)
    options = _options(args, args.loss)
    encoder = FaceNetEncoder(weights_file(model_dir), flip_tta=True)
    pairs = read_pairs(args.lfw / "pairsDevTest.txt")
    paths = sorted({p for pr in pairs for p in (pr.a, pr.b)})
    raw = json.loads(args.detections.read_text())
    emb: dict[str, Any] = {}
    for s in range(0, len(paths), 32):
        chunk = [p for p in paths[s : s + 32] if raw.get(p)]
        crops = [
            load_crop(
                args.lfw / "lfw-deepfunneled", p, detection_from_json(raw[p]), photo_transform=options.photo_transform
            )
            for p in chunk
        ]
        if options.transform is not None:
            crops = [options.transform(c) for c in crops]
        for p, e in zip(chunk, encoder.encode(np.stack(crops)), strict=True):
            emb[p] = e
    d = np.array([np.linalg.norm(emb[pr.a] - emb[pr.b]) if pr.a in emb and pr.b in emb else 2.0 for pr in pairs])
    m = verification(d, np.array([pr.same for pr in pairs]))
    cached = run["test_pairsDevTest"]["after"]
    out = {"model_dir": str(model_dir), "full_network": m, "cached_tail": cached}
    (OUT / f"{args.domain}-{args.loss}-verify.json").write_text(json.dumps(out, indent=1))
    print(json.dumps(out, indent=1))


def cmd_last(args: argparse.Namespace) -> None:
    """The LAST weights of a run (its checkpoint), which early stopping may have rejected, on the test pairs:
    what training did to the test figure, as opposed to what the validation guard let through."""
    from embeddings import weights as weights_mod
    from embeddings.training.cache import cache_key
    from embeddings.training.fit import _load_arrays
    from embeddings.training.network import split_model

    options = _options(args, args.loss)
    run = cache_key(loss=args.loss, lr=args.lr, tag=args.tag)
    arrays = _load_arrays(WORK / args.domain / "checkpoints" / run / "weights.npz")
    state = json.loads((WORK / args.domain / "checkpoints" / run / "state.json").read_text())
    sm = split_model(weights_mod.resolve(), options.cut)
    test, ok, _ = _test_set(args, sm.head, options)
    for v, a in zip(sm.tail.trainable_variables, arrays["current"], strict=True):
        v.assign(a)
    last = state["history"][-1]
    out = {"step": state["step"], "val_last": last, "test_last": _test_metrics(sm.tail, test, ok, 1.075)}
    tag = f"-{args.tag}" if args.tag else ""
    (OUT / f"{args.domain}-{args.loss}{tag}-last.json").write_text(json.dumps(out, indent=1))
    print(json.dumps(out, indent=1))


def cmd_report(_: argparse.Namespace) -> None:
    rows = []
    for f in sorted(OUT.glob("*-*.json")):
        if f.stem.endswith(("verify", "last")) or f.stem == "summary":
            continue
        r = json.loads(f.read_text())
        t = r["test_pairsDevTest"]
        rows.append(
            {
                "run": f.stem,
                "before_acc": t["before"]["accuracy_best_threshold"],
                "after_acc": t["after"]["accuracy_best_threshold"],
                "delta_points": r["delta_points_best_threshold"],
                "before_acc_val_thr": t["before"]["accuracy_at_val_threshold"],
                "after_acc_val_thr": t["after"]["accuracy_at_val_threshold"],
                "before_tar_1e-3": t["before"]["tar_at_far_1e-3"],
                "after_tar_1e-3": t["after"]["tar_at_far_1e-3"],
                "val_before": r["validation"]["before"]["accuracy"],
                "val_after": r["validation"]["after"]["accuracy"],
                "steps": r["params"]["steps"],
                "best_step": r["params"]["best_step"],
                "stopped": r["params"]["stopped"],
                "train_seconds": r["train_seconds"],
            }
        )
    (OUT / "summary.json").write_text(json.dumps(rows, indent=1))
    head = (
        "| run | View 1 acc before | after | delta (points) | acc at val threshold before / after "
        "| TAR@FAR1e-3 before / after | steps (best) | train s |"
    )
    print(head)
    print("|" + "---|" * 8)
    for r in rows:
        print(
            f"| {r['run']} | {100 * r['before_acc']:.1f}% | {100 * r['after_acc']:.1f}% | {r['delta_points']:+.1f} | "
            f"{100 * r['before_acc_val_thr']:.1f}% / {100 * r['after_acc_val_thr']:.1f}% | "
            f"{r['before_tar_1e-3']:.3f} / {r['after_tar_1e-3']:.3f} | "
            f"{r['steps']} ({r['best_step']}, {r['stopped']}) | "
            f"{r['train_seconds']:.0f} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    for name in ("prepare", "train", "verify", "last", "report"):
        p = sub.add_parser(name)
        p.add_argument("--domain", choices=("clean", "degraded", "lowres"), default="clean")
        p.add_argument("--lfw", type=Path, default=LFW)
        p.add_argument("--detections", type=Path, default=DETECTIONS)
        p.add_argument("--max-per-person", type=int, default=8)
        if name in ("train", "verify", "last"):
            p.add_argument("--loss", choices=("triplet", "contrastive"), default="triplet")
        if name == "last":
            p.add_argument("--lr", type=float, default=5e-5)
            p.add_argument("--tag", default="")
        if name == "train":
            p.add_argument("--max-minutes", type=float, default=8.0)
            p.add_argument("--max-steps", type=int, default=4000)
            p.add_argument("--lr", type=float, default=5e-5)
            p.add_argument("--eval-every", type=int, default=100)
            p.add_argument("--tag", default="", help="suffix of the result file name (e.g. a learning-rate trial)")
            p.add_argument("--resume", action="store_true")
            p.add_argument(
                "--models-root", type=Path, default=WORK / "cache", help="cache root whose models/ gets the model"
            )
    args = parser.parse_args()
    commands = {
        "prepare": cmd_prepare,
        "train": cmd_train,
        "verify": cmd_verify,
        "last": cmd_last,
        "report": cmd_report,
    }
    commands[args.cmd](args)


if __name__ == "__main__":
    main()
