"""``train_folder``: fine-tune FaceNet on a folder of people and write a model directory (what ``facerec train``
runs). ``prepare`` does the untimed part (scan, split, detect, cache activations); ``fit`` trains; the result is
saved with ``model_dir.save_model_dir`` and its card.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from embeddings.align import DEFAULT_MARGIN
from embeddings.dataset import detection_from_json
from embeddings.training import data
from embeddings.training.cache import Transform, cache_key, cached_activations
from embeddings.training.fit import FitConfig, FitResult, PairSet, StepReport, fit
from embeddings.training.model_dir import make_model_id, save_model_dir
from embeddings.training.network import DEFAULT_CUT, SplitModel, split_model
from embeddings.types import Detection

AUGMENTATION = (
    "variant 0 = the aligned crop, 1 = its mirror image, 2.. = random flip (p=0.5), rotation +-8 deg, scale "
    "+-7%, brightness +-12%, contrast +-20%, Gaussian blur sigma 0.5-1.5 (p=0.3); made once, before caching"
)

Stage = Callable[[str, int], Callable[[int], None]]
"""``stage(description, total)`` -> an ``advance(n)`` callback, for progress bars."""


def _no_stage(_: str, __: int) -> Callable[[int], None]:
    return lambda _n: None


@dataclass(frozen=True)
class TrainOptions:
    """What to train on and how. ``transform`` (with a ``transform_name`` for the card) alters every aligned
    crop before augmentation, e.g. a simulated camera, and ``photo_transform`` every whole photo before
    alignment (the detections stay those of the original photo); ``seed_detections`` is a read-only detections JSON
    (dataset.py format) used before running the detector."""

    name: str = "custom"
    cut: str = DEFAULT_CUT
    fit: FitConfig = field(default_factory=FitConfig)
    n_variants: int = 4
    val_fraction: float = 0.15
    min_images: int = 2
    max_per_person: int | None = None
    exclude: tuple[str, ...] = ()
    val_pairs: int = 4000
    margin: float = DEFAULT_MARGIN
    rotate: bool = True
    seed: int = 0
    transform: Transform | None = None
    photo_transform: Transform | None = None
    transform_name: str | None = None
    seed_detections: Path | None = None


@dataclass
class Prepared:
    """Everything ``fit`` needs, plus the data summary for the card."""

    split: SplitModel
    train_acts: npt.NDArray[np.float16]
    train_labels: npt.NDArray[np.int64]
    val: PairSet
    summary: dict[str, Any]


def default_work_dir(name: str) -> Path:
    """``<cache>/training/<name>``: detections, activation caches and checkpoints of one training setup."""
    from embeddings.weights import cache_dir

    return cache_dir() / "training" / name


def _detections(
    root: Path, paths: list[str], work: Path, seed_file: Path | None, stage: Stage
) -> dict[str, Detection | None]:
    cache_file = work / "detections.json"
    if seed_file is not None and not cache_file.is_file():
        seed = json.loads(Path(seed_file).read_text())
        known = {p: seed[p] for p in paths if p in seed}
        work.mkdir(parents=True, exist_ok=True)
        cache_file.write_text(json.dumps(known))
    if cache_file.is_file():
        cached = json.loads(cache_file.read_text())
        if all(p in cached for p in paths):
            return {p: (detection_from_json(cached[p]) if cached[p] is not None else None) for p in paths}
    return data.detect(root, paths, cache_file=cache_file, progress=stage("detect faces", len(paths)))


def prepare(
    root: Path,
    options: TrainOptions,
    *,
    weights: Path,
    work_dir: Path,
    stage: Stage = _no_stage,
) -> Prepared:
    """Scan and split the people, detect faces (cached), and compute or load the activation caches."""
    people = data.scan_people(
        root, min_images=options.min_images, max_per_person=options.max_per_person, exclude=options.exclude
    )
    paths = [p for imgs in people.values() for p in imgs]
    detections = _detections(root, paths, work_dir, options.seed_detections, stage)
    misses = sorted(p for p in paths if detections.get(p) is None)
    found = {person: [p for p in imgs if detections.get(p) is not None] for person, imgs in people.items()}
    found = {person: imgs for person, imgs in found.items() if len(imgs) >= options.min_images}
    people_split = data.split_people(found, val_fraction=options.val_fraction, seed=options.seed)
    split = split_model(weights, options.cut)
    key = cache_key(
        root=str(Path(root).resolve()),
        cut=options.cut,
        margin=options.margin,
        rotate=options.rotate,
        transform=options.transform_name,
        seed=options.seed,
        weights=str(weights),
    )

    def acts_for(kind: str, persons: dict[str, list[str]], n_variants: int) -> npt.NDArray[np.float16]:
        items = [(p, detections[p]) for imgs in persons.values() for p in imgs]
        items_ok = [(p, d) for p, d in items if d is not None]
        sub = cache_key(key=key, kind=kind, n=n_variants, paths=[p for p, _ in items_ok])
        return cached_activations(
            work_dir / f"acts-{kind}-{sub}.npy",
            split.head,
            root,
            items_ok,
            n_variants=n_variants,
            seed=options.seed,
            transform=options.transform,
            photo_transform=options.photo_transform,
            margin=options.margin,
            rotate=options.rotate,
            progress=stage(f"cache {kind} activations", len(items_ok)),
        )

    train_acts = acts_for("train", people_split.train, options.n_variants)
    train_labels = np.array([i for i, imgs in enumerate(people_split.train.values()) for _ in imgs], dtype=np.int64)
    val_acts = acts_for("val", people_split.val, 2)
    val_paths = [p for imgs in people_split.val.values() for p in imgs]
    index = {p: i for i, p in enumerate(val_paths)}
    pairs, same = data.validation_pairs(people_split.val, max_pairs=options.val_pairs, seed=options.seed)
    val = PairSet(
        val_acts,
        np.array([index[a] for a, _ in pairs], dtype=np.int64),
        np.array([index[b] for _, b in pairs], dtype=np.int64),
        same,
    )
    summary = {
        "root": str(root),
        **people_split.summary(),
        "val_people_names": sorted(people_split.val),
        "detector_misses": len(misses),
        "min_images": options.min_images,
        "max_per_person": options.max_per_person,
        "excluded_people": len(options.exclude),
        "split": f"by person, seeded ({options.seed}); {options.val_fraction:.0%} of people held out",
        "validation_pairs": {"same": int(same.sum()), "different": int((~same).sum())},
        "augmentation": {"variants": options.n_variants, "description": AUGMENTATION},
        "transform": options.transform_name,
        "align": {"margin": options.margin, "rotate": options.rotate, "flip_tta_in_validation": True},
    }
    return Prepared(split, train_acts, train_labels, val, summary)


def make_card(
    model_id: str, options: TrainOptions, prepared: Prepared, result: FitResult, base_model_id: str
) -> dict[str, Any]:
    """The model card (see docs/FINETUNE.md for every field)."""
    cfg = options.fit
    return {
        "model_id": model_id,
        "base_model_id": base_model_id,
        "threshold": round(float(result.after["threshold"]), 4),
        "threshold_source": "the accuracy-maximising L2 threshold on the validation people's pairs (after)",
        "data": prepared.summary,
        "params": {
            **asdict(cfg),
            "margin": cfg.resolved_margin,
            "freeze_up_to": options.cut,
            "trainable_parameters": int(sum(int(np.prod(v.shape)) for v in prepared.split.tail.trainable_variables)),
            "steps": result.steps,
            "best_step": result.best_step,
            "stopped": result.stopped,
            "optimizer": "Adam",
            "batchnorm": "inference statistics kept; scale/offset trained",
        },
        "validation": {"before": result.before, "after": result.after},
        "history": result.history,
        "train_seconds": round(result.seconds, 1),
    }


def train_folder(
    root: Path,
    options: TrainOptions,
    *,
    weights: Path | None = None,
    work_dir: Path | None = None,
    models_root: Path | None = None,
    resume: bool = False,
    stage: Stage = _no_stage,
    on_step: Callable[[StepReport], None] = lambda _: None,
) -> tuple[Path, dict[str, Any]]:
    """Fine-tune on ``root`` (``<root>/<person>/<image>``) and save a model directory; returns it and its card.

    ``models_root`` is the cache root whose ``models/`` receives the directory (default: the cache dir).
    """
    from embeddings import weights as weights_mod

    weights = weights or weights_mod.resolve()
    work = work_dir or default_work_dir(options.name)
    prepared = prepare(root, options, weights=weights, work_dir=work, stage=stage)
    run = cache_key(fit=asdict(options.fit) | {"max_minutes": None, "max_steps": None}, cut=options.cut)
    result = fit(
        prepared.split,
        prepared.train_acts,
        prepared.train_labels,
        prepared.val,
        options.fit,
        checkpoint_dir=work / "checkpoints" / run,
        resume=resume,
        on_step=on_step,
    )
    model_id = make_model_id(options.name)
    card = make_card(model_id, options, prepared, result, base_model_id=weights_mod.MODEL_ID)
    out = save_model_dir(prepared.split.full, card, models_root)
    return out, card
