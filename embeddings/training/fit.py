"""The fit loop: a compiled train step on the trainable tail over cached activations, validation on held-out
people, early stopping, a resumable checkpoint, and progress reports.

Model selection (early stopping and the weights kept) uses the operating points serving uses, on the selection
people: ``score`` = mean of TAR@FAR 1e-3 and open-set TPIR@FPIR 1% (``operating.py``); ``selection="accuracy"``
is the old best-threshold accuracy rule, kept for comparison. A validation must beat the best so far strictly to
be kept, so ties keep the earlier (closer to pretrained) weights.

Staying close to the pretrained model: ``distill`` adds ``distill * mean ||e - e0||^2`` (e0 = the starting
model's unit embedding of the same input, computed once before training) and ``l2sp`` adds
``l2sp * sum ||w - w0||^2`` over the trainable weights (L2-SP).

The tail runs with ``training=False``: BatchNorm keeps the pretrained statistics (its scale and offset are still
trained) and dropout is off, which keeps small-batch fine-tuning stable. Embeddings are L2-normalised before the
loss, as in serving. Validation embeds variant 0 and its mirror (variant 1) and sums them before normalising, i.e.
serving's flip test-time augmentation.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from embeddings.evaluation import accuracy_at, best_threshold, roc, tar_at_far
from embeddings.tf_quiet import import_tensorflow
from embeddings.training.losses import DEFAULT_MARGINS, LOSSES
from embeddings.training.network import SplitModel
from embeddings.training.operating import figures, score_set
from embeddings.training.sampler import PKSampler


@dataclass(frozen=True, slots=True)
class FitConfig:
    """Training parameters. ``margin`` None = the loss's default (triplet 0.2, contrastive 1.1)."""

    loss: str = "triplet"
    margin: float | None = None
    people_per_batch: int = 30
    images_per_person: int = 4
    learning_rate: float = 5e-5
    max_steps: int = 4000
    max_minutes: float = 10.0
    eval_every: int = 100
    patience: int = 6
    seed: int = 0
    distill: float = 0.0
    l2sp: float = 0.0
    selection: str = "score"

    @property
    def resolved_margin(self) -> float:
        return DEFAULT_MARGINS[self.loss] if self.margin is None else self.margin


@dataclass(frozen=True, slots=True)
class PairSet:
    """Activations (images, >=2 variants, ...) float16 and pairs of image indices with same/different labels."""

    acts: npt.NDArray[np.float16]
    a: npt.NDArray[np.int64]
    b: npt.NDArray[np.int64]
    same: npt.NDArray[np.bool_]


@dataclass(frozen=True, slots=True)
class LabelledSet:
    """Activations (images, >=2 variants, ...) float16 and the person label of each image."""

    acts: npt.NDArray[np.float16]
    labels: npt.NDArray[np.int64]


SELECTIONS = ("score", "accuracy")


@dataclass
class FitResult:
    steps: int
    seconds: float
    stopped: str
    best_step: int
    before: dict[str, float]
    after: dict[str, float]
    history: list[dict[str, float]] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class StepReport:
    step: int
    max_steps: int
    loss: float
    active: float
    val_accuracy: float | None
    val_score: float | None = None


def embed_cached(tail: Any, acts: npt.NDArray[np.float16], *, flip: bool = True, batch: int = 512) -> Any:
    """Unit embeddings (N, 128) float32 of cached activations; ``flip`` sums variants 0 and 1 first."""
    out = []
    for s in range(0, len(acts), batch):
        chunk = np.asarray(acts[s : s + batch], dtype=np.float32)
        e = np.asarray(tail(chunk[:, 0], training=False), dtype=np.float32)
        if flip:
            e = e + np.asarray(tail(chunk[:, 1], training=False), dtype=np.float32)
        out.append(e)
    emb = np.concatenate(out) if out else np.zeros((0, 128), np.float32)
    return (emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-10)).astype(np.float32)


def pair_distances(emb: npt.NDArray[np.float32], pairs: PairSet) -> npt.NDArray[np.float64]:
    return np.linalg.norm(emb[pairs.a] - emb[pairs.b], axis=1).astype(np.float64)


def verification(distances: npt.NDArray[np.float64], same: npt.NDArray[np.bool_]) -> dict[str, float]:
    """Accuracy at the accuracy-maximising threshold on these pairs, that threshold, and TAR at FAR 1e-3."""
    t = best_threshold(distances, same)
    tar3, t3 = tar_at_far(roc(distances, same), 1e-3)
    return {
        "accuracy": accuracy_at(distances, same, t),
        "threshold": t,
        "tar_at_far_1e-3": tar3,
        "threshold_at_far_1e-3": t3,
        "pairs": len(same),
    }


def evaluate(tail: Any, pairs: PairSet) -> dict[str, float]:
    return verification(pair_distances(embed_cached(tail, pairs.acts), pairs), pairs.same)


def operating_figures(tail: Any, labelled: LabelledSet) -> dict[str, float]:
    """Point figures (``operating.figures``) of ``tail`` on a labelled set, flip TTA like serving."""
    return figures(score_set(embed_cached(tail, labelled.acts), labelled.labels))


def _key(m: dict[str, float], selection: str) -> float:
    return round(m["accuracy" if selection == "accuracy" else "score"], 9)


def unit_embeddings_all_variants(tail: Any, acts: npt.NDArray[np.float16], batch: int = 512) -> Any:
    """(images, variants, 128) float32 unit embeddings of every cached variant (the distillation targets)."""
    n, v = acts.shape[:2]
    flat = acts.reshape(n * v, *acts.shape[2:])
    out = []
    for s in range(0, len(flat), batch):
        e = np.asarray(tail(np.asarray(flat[s : s + batch], dtype=np.float32), training=False), dtype=np.float32)
        out.append(e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-10))
    return np.concatenate(out).reshape(n, v, -1) if out else np.zeros((n, v, 0), np.float32)


def _atomic_json(path: Path, obj: object) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1))
    os.replace(tmp, path)


def _save_arrays(path: Path, arrays: dict[str, list[npt.NDArray[Any]]]) -> None:
    flat = {f"{k}_{i:04d}": a for k, lst in arrays.items() for i, a in enumerate(lst)}
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, **flat)  # type: ignore[arg-type]
    os.replace(tmp, path)


def _load_arrays(path: Path) -> dict[str, list[npt.NDArray[Any]]]:
    out: dict[str, list[npt.NDArray[Any]]] = {}
    with np.load(path) as z:
        for key in sorted(z.files):
            group, _ = key.rsplit("_", 1)
            out.setdefault(group, []).append(z[key])
    return out


def fit(
    split: SplitModel,
    train_acts: npt.NDArray[np.float16],
    train_labels: npt.NDArray[np.int64],
    val: LabelledSet,
    config: FitConfig,
    *,
    checkpoint_dir: Path | None = None,
    resume: bool = False,
    on_step: Callable[[StepReport], None] = lambda _: None,
    before: dict[str, float] | None = None,
) -> FitResult:
    """Train ``split.tail`` on ``train_acts`` (images, variants, ...) with person labels; select on ``val``
    (the selection people) by ``config.selection``.

    Stops at ``max_steps``, after ``max_minutes`` of wall time (counted across resumes), or after ``patience``
    validations without improvement; the best validated weights are left in the model. With ``checkpoint_dir``
    the state is saved after every validation, and ``resume=True`` continues from it.
    """
    tf = import_tensorflow()
    import keras

    if config.loss not in LOSSES:
        raise ValueError(f"unknown loss {config.loss!r}; choose one of {sorted(LOSSES)}")
    if config.selection not in SELECTIONS:
        raise ValueError(f"unknown selection {config.selection!r}; choose one of {SELECTIONS}")
    tail = split.tail
    loss_fn = LOSSES[config.loss]
    margin = config.resolved_margin
    variables = tail.trainable_variables
    optimizer = keras.optimizers.Adam(learning_rate=config.learning_rate)
    optimizer.build(variables)
    shape = list(train_acts.shape[2:])
    # Before any checkpoint is restored: the starting model's embeddings and weights are the anchors.
    dim = int(tail(np.asarray(train_acts[:1, 0], dtype=np.float32), training=False).shape[-1])
    teacher = unit_embeddings_all_variants(tail, train_acts) if config.distill > 0 else None
    anchors = [tf.constant(v.numpy()) for v in variables] if config.l2sp > 0 else []

    @tf.function(
        input_signature=[
            tf.TensorSpec([None, *shape], tf.float16),
            tf.TensorSpec([None], tf.int64),
            tf.TensorSpec([None, dim], tf.float32),
        ],
        reduce_retracing=True,
    )
    def train_step(x: Any, y: Any, target: Any) -> tuple[Any, Any]:
        with tf.GradientTape() as tape:
            emb = tf.math.l2_normalize(tail(tf.cast(x, tf.float32), training=False), axis=1)
            loss, active = loss_fn(emb, y, margin)
            total = loss
            if config.distill > 0:
                total += config.distill * tf.reduce_mean(tf.reduce_sum(tf.square(emb - target), axis=1))
            if config.l2sp > 0:
                total += config.l2sp * tf.add_n(
                    [tf.reduce_sum(tf.square(v - a)) for v, a in zip(variables, anchors, strict=True)]
                )
        grads = tape.gradient(total, variables)
        optimizer.apply_gradients(zip(grads, variables, strict=True))
        return loss, active

    rng = np.random.default_rng(config.seed)
    sampler = PKSampler(
        train_labels,
        people_per_batch=config.people_per_batch,
        images_per_person=config.images_per_person,
        n_variants=train_acts.shape[1],
        rng=rng,
    )
    state: dict[str, Any] = {"step": 0, "elapsed": 0.0, "bad": 0, "best_step": 0, "history": []}
    ckpt_state = checkpoint_dir / "state.json" if checkpoint_dir else None
    ckpt_arrays = checkpoint_dir / "weights.npz" if checkpoint_dir else None
    best_weights = [v.numpy().copy() for v in variables]
    if resume and ckpt_state is not None and ckpt_arrays is not None and ckpt_state.is_file():
        state = json.loads(ckpt_state.read_text())
        if state.get("config") != asdict(config) | {"max_minutes": None, "max_steps": None}:
            raise ValueError(f"{checkpoint_dir}: the checkpoint was made with other training parameters")
        arrays = _load_arrays(ckpt_arrays)
        for v, a in zip(variables, arrays["current"], strict=True):
            v.assign(a)
        for v, a in zip(optimizer.variables, arrays["optimizer"], strict=True):
            v.assign(a)
        best_weights = arrays["best"]
        rng.bit_generator.state = state["rng"]
        sampler._queue = list(state["queue"])
    if before is None:
        before = state.get("before") or operating_figures(tail, val)
    state["before"] = before
    best_metrics: dict[str, float] = state.get("best") or before
    state["best"] = best_metrics

    def checkpoint() -> None:
        if checkpoint_dir is None or ckpt_state is None or ckpt_arrays is None:
            return
        checkpoint_dir.mkdir(parents=True, exist_ok=True)
        _save_arrays(
            ckpt_arrays,
            {
                "current": [v.numpy().copy() for v in variables],
                "optimizer": [v.numpy().copy() for v in optimizer.variables],
                "best": best_weights,
            },
        )
        state["rng"] = rng.bit_generator.state
        state["loss_avg"], state["active_avg"] = loss_avg, active_avg
        state["queue"] = sampler._queue
        state["config"] = asdict(config) | {"max_minutes": None, "max_steps": None}
        _atomic_json(ckpt_state, state)

    started = time.monotonic() - float(state["elapsed"])
    stopped = "max_steps"
    loss_avg = float(state.get("loss_avg", math.nan))
    active_avg = float(state.get("active_avg", math.nan))
    last_acc: float | None = state["history"][-1]["val_accuracy"] if state["history"] else None
    last_score: float | None = state["history"][-1].get("val_score") if state["history"] else None
    while state["step"] < config.max_steps:
        if time.monotonic() - started > config.max_minutes * 60.0:
            stopped = "time"
            break
        idx, var, labels = sampler.batch()
        target = teacher[idx, var] if teacher is not None else np.zeros((len(idx), dim), np.float32)
        loss_t, active_t = train_step(train_acts[idx, var], labels, target)
        loss, active = float(loss_t), float(active_t)
        loss_avg = loss if math.isnan(loss_avg) else 0.95 * loss_avg + 0.05 * loss
        active_avg = active if math.isnan(active_avg) else 0.95 * active_avg + 0.05 * active
        state["step"] += 1
        if state["step"] % config.eval_every == 0 or state["step"] == config.max_steps:
            m = operating_figures(tail, val)
            last_acc, last_score = m["accuracy"], m["score"]
            state["history"].append(
                {
                    "step": state["step"],
                    "loss": loss_avg,
                    "active": active_avg,
                    "val_accuracy": m["accuracy"],
                    "val_tar_at_far_1e-3": m["tar_at_far_1e-3"],
                    "val_tpir_at_fpir_1e-2": m["tpir_at_fpir_1e-2"],
                    "val_score": m["score"],
                    "seconds": time.monotonic() - started,
                }
            )
            if _key(m, config.selection) > _key(best_metrics, config.selection):
                state["bad"] = 0
                best_metrics, state["best_step"] = m, state["step"]
                best_weights = [v.numpy().copy() for v in variables]
            else:
                state["bad"] += 1
            state["best"] = best_metrics
            state["elapsed"] = time.monotonic() - started
            checkpoint()
            if state["bad"] >= config.patience:
                stopped = "early_stopping"
                on_step(StepReport(state["step"], config.max_steps, loss_avg, active_avg, last_acc, last_score))
                break
        on_step(StepReport(state["step"], config.max_steps, loss_avg, active_avg, last_acc, last_score))
    state["elapsed"] = time.monotonic() - started
    checkpoint()
    for v, a in zip(variables, best_weights, strict=True):
        v.assign(a)
    return FitResult(
        steps=int(state["step"]),
        seconds=float(state["elapsed"]),
        stopped=stopped,
        best_step=int(state["best_step"]),
        before=before,
        after=best_metrics,
        history=list(state["history"]),
    )
