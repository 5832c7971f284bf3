"""``train_folder``: fine-tune FaceNet on a folder of people and write a model directory (what ``facerec train``
runs). ``prepare`` does the untimed part (scan, split, detect, cache activations); ``fit`` trains, selecting on
the selection people; ``gate.judge`` compares the result with the starting model on the gate people (never used
for selection); the model is saved with ``model_dir.save_model_dir`` only when the gate accepts it, or when asked
to keep it, then marked rejected.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from embeddings.align import BORDER_FILL, DEFAULT_MARGIN
from embeddings.dataset import detection_from_json
from embeddings.model_card import default_threshold
from embeddings.training import data
from embeddings.training.cache import Transform, cache_key, cached_activations
from embeddings.training.fit import FitConfig, FitResult, LabelledSet, StepReport, embed_cached, fit
from embeddings.training.gate import GATE_RULE, judge
from embeddings.training.model_dir import make_model_id, name_slug, save_model_dir
from embeddings.training.network import DEFAULT_CUT, SplitModel, split_model
from embeddings.training.operating import compare, figures, score_set
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
    val_fraction: float = 0.3
    min_images: int = 2
    max_per_person: int | None = None
    exclude: tuple[str, ...] = ()
    margin: float = DEFAULT_MARGIN
    rotate: bool = True
    seed: int = 0
    transform: Transform | None = None
    photo_transform: Transform | None = None
    transform_name: str | None = None
    seed_detections: Path | None = None
    eval_root: Path | None = None
    keep_rejected: bool = False


MIN_GATE_PEOPLE = 6
"""With fewer validation people than this, selection and gate share them all (the card says so)."""


@dataclass
class Prepared:
    """Everything ``fit`` and the gate need, plus the data summary for the card. ``selection`` and ``gate`` are
    disjoint halves of the validation people (unless there are fewer than ``MIN_GATE_PEOPLE``)."""

    split: SplitModel
    train_acts: npt.NDArray[np.float16]
    train_labels: npt.NDArray[np.int64]
    selection: LabelledSet
    gate: LabelledSet
    summary: dict[str, Any]


def default_work_dir(name: str) -> Path:
    """``<cache>/training/<slug of name>``: detections, activation caches and checkpoints of one training setup.
    The name is reduced to ``[a-z0-9-]`` as in the model id, so ``/x`` or ``../x`` cannot leave the cache."""
    from embeddings.weights import cache_dir

    return cache_dir() / "training" / name_slug(name)


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
    if len(people_split.train) < 2:  # checked before the (slow) activation caches, not by the sampler after them
        raise ValueError(
            f"{root}: of {len(found)} people with {options.min_images} or more images with a face, "
            f"{len(people_split.val)} are held out for validation, leaving {len(people_split.train)} to train on; "
            "training needs at least 2 (so at least 3 people in all)"
        )
    split = split_model(weights, options.cut)
    key = cache_key(
        root=str(Path(root).resolve()),
        cut=options.cut,
        margin=options.margin,
        border=BORDER_FILL,
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
    val_labels = np.array([i for i, imgs in enumerate(people_split.val.values()) for _ in imgs], dtype=np.int64)
    n_val = len(people_split.val)
    shared = n_val < MIN_GATE_PEOPLE
    order = np.random.default_rng([options.seed, 1]).permutation(n_val)
    gate_people = set(range(n_val)) if shared else {int(i) for i in order[: n_val // 2]}
    sel_people = set(range(n_val)) if shared else {int(i) for i in order[n_val // 2 :]}
    in_gate = np.isin(val_labels, sorted(gate_people))
    in_sel = np.isin(val_labels, sorted(sel_people))
    selection = LabelledSet(val_acts[in_sel], val_labels[in_sel])
    gate = LabelledSet(val_acts[in_gate], val_labels[in_gate])
    summary = {
        "root": str(root),
        **people_split.summary(),
        "val_people_names": sorted(people_split.val),
        "detector_misses": len(misses),
        "min_images": options.min_images,
        "max_per_person": options.max_per_person,
        "excluded_people": len(options.exclude),
        "split": f"by person, seeded ({options.seed}); {options.val_fraction:.0%} of people held out",
        "selection_people": len(sel_people),
        "gate_people": len(gate_people),
        "gate_shares_selection_people": shared,
        "augmentation": {"variants": options.n_variants, "description": AUGMENTATION},
        "transform": options.transform_name,
        "align": {"margin": options.margin, "rotate": options.rotate, "flip_tta_in_validation": True},
    }
    return Prepared(split, train_acts, train_labels, selection, gate, summary)


def labelled_folder(root: Path, options: TrainOptions, head: Any, work: Path, stage: Stage) -> LabelledSet:
    """Activations (crop, mirror) and person labels of a separate labelled folder (``--eval-root``): every person
    with >= 2 detected images, through the serving detector and alignment; detections cached under ``work``."""
    root = Path(root)
    people = data.scan_people(root, min_images=2, max_per_person=options.max_per_person)
    paths = [p for imgs in people.values() for p in imgs]
    sub = work / "eval" / cache_key(root=str(root.resolve()))
    dets = _detections(root, paths, sub, None, stage)
    found = {k: [p for p in v if dets.get(p) is not None] for k, v in people.items()}
    found = {k: v for k, v in found.items() if len(v) >= 2}
    if len(found) < 2:
        raise ValueError(f"{root}: the evaluation folder needs at least 2 people with 2 or more detected faces")
    items = [(p, dets[p]) for v in found.values() for p in v]
    key = cache_key(
        root=str(root.resolve()),
        cut=options.cut,
        paths=[p for p, _ in items],
        margin=options.margin,
        border=BORDER_FILL,
    )
    acts = cached_activations(
        sub / f"acts-{key}.npy",
        head,
        root,
        items,  # type: ignore[arg-type]
        n_variants=2,
        seed=options.seed,
        margin=options.margin,
        rotate=options.rotate,
        progress=stage("cache evaluation activations", len(items)),
    )
    labels = np.array([i for i, v in enumerate(found.values()) for _ in v], dtype=np.int64)
    return LabelledSet(acts, labels)


def fit_prepared(
    prepared: Prepared,
    options: TrainOptions,
    *,
    checkpoint_dir: Path,
    resume: bool,
    on_step: Callable[[StepReport], None],
) -> FitResult:
    """:func:`fit` on what :func:`prepare` made: its split, training activations and selection people."""
    return fit(
        prepared.split,
        prepared.train_acts,
        prepared.train_labels,
        prepared.selection,
        options.fit,
        checkpoint_dir=checkpoint_dir,
        resume=resume,
        on_step=on_step,
    )


def make_card(
    model_id: str,
    options: TrainOptions,
    prepared: Prepared,
    result: FitResult,
    gate: dict[str, Any],
    threshold: float,
    eval_root: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The model card (see docs/FINETUNE.md for every field); the base model is the pretrained FaceNet's.
    ``gate`` is ``operating.compare`` on the gate people plus ``decision`` (``gate.judge``)."""
    from embeddings.weights import MODEL_ID as base_model_id

    cfg = options.fit
    accepted = bool(gate["decision"]["accepted"])
    card: dict[str, Any] = {
        "model_id": model_id,
        "base_model_id": base_model_id,
        "status": "accepted" if accepted else "rejected",
        "threshold": round(float(threshold), 4),
        "threshold_source": "the accuracy-maximising L2 threshold on all validation people's pairs (after)",
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
        "validation": {"before": gate["before"], "after": gate["after"]},
        "gate": {
            "rule": GATE_RULE,
            **gate["decision"],
            "delta": gate["delta"],
            "delta_ci95": gate["delta_ci95"],
            "bootstrap": gate["bootstrap"],
        },
        "selection": {"before": result.before, "after": result.after},
        "history": result.history,
        "train_seconds": round(result.seconds, 1),
    }
    if eval_root is not None:
        card["eval_root"] = eval_root
    return card


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
) -> tuple[Path | None, dict[str, Any]]:
    """Fine-tune on ``root`` (``<root>/<person>/<image>``), judge the result on the gate people, and save the
    model directory if the gate accepts it (or ``options.keep_rejected``, marked rejected). Returns the directory
    (None when nothing was saved) and the card.

    ``models_root`` is the cache root whose ``models/`` receives the directory (default: the cache dir).
    """
    from embeddings import weights as weights_mod

    weights = weights or weights_mod.resolve()
    work = work_dir or default_work_dir(options.name)
    prepared = prepare(root, options, weights=weights, work_dir=work, stage=stage)
    tail = prepared.split.tail
    evalset = (
        labelled_folder(options.eval_root, options, prepared.split.head, work, stage)
        if options.eval_root is not None
        else None
    )
    gate_before = score_set(embed_cached(tail, prepared.gate.acts), prepared.gate.labels)
    eval_before = score_set(embed_cached(tail, evalset.acts), evalset.labels) if evalset is not None else None
    run = cache_key(fit=asdict(options.fit) | {"max_minutes": None, "max_steps": None}, cut=options.cut)
    result = fit_prepared(prepared, options, checkpoint_dir=work / "checkpoints" / run, resume=resume, on_step=on_step)
    gate = compare(gate_before, score_set(embed_cached(tail, prepared.gate.acts), prepared.gate.labels))
    gate["decision"] = judge(gate)
    eval_cmp = None
    if evalset is not None and eval_before is not None:
        eval_cmp = compare(eval_before, score_set(embed_cached(tail, evalset.acts), evalset.labels))
        eval_cmp["root"] = str(options.eval_root)
        eval_cmp["decision"] = judge(eval_cmp)
    val_acts = np.concatenate([prepared.selection.acts, prepared.gate.acts])
    val_labels = np.concatenate([prepared.selection.labels, prepared.gate.labels])
    threshold = figures(score_set(embed_cached(tail, val_acts), val_labels))["threshold"]
    if not 0.0 < threshold <= 2.0:  # degenerate validation (e.g. 1-2 people): keep the base model's
        threshold = default_threshold()
    model_id = make_model_id(options.name)
    card = make_card(model_id, options, prepared, result, gate=gate, threshold=threshold, eval_root=eval_cmp)
    if card["status"] == "rejected" and not options.keep_rejected:
        return None, card
    return save_model_dir(prepared.split.full, card, models_root), card
