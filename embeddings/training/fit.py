"""The fit loop: a compiled train step on the trainable tail over cached activations, validation on held-out
people, early stopping, a resumable checkpoint, and progress reports.

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
from embeddings.training.losses import DEFAULT_MARGINS, LOSSES
from embeddings.training.network import SplitModel
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


def _score(m: dict[str, float]) -> tuple[float, float]:
    return (round(m["accuracy"], 6), m["tar_at_far_1e-3"])


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
    val: PairSet,
    config: FitConfig,
    *,
    checkpoint_dir: Path | None = None,
    resume: bool = False,
    on_step: Callable[[StepReport], None] = lambda _: None,
    before: dict[str, float] | None = None,
) -> FitResult:
    """Train ``split.tail`` on ``train_acts`` (images, variants, ...) with person labels; early-stop on ``val``.

    Stops at ``max_steps``, after ``max_minutes`` of wall time (counted across resumes), or after ``patience``
    validations without improvement; the best validated weights are left in the model. With ``checkpoint_dir``
    the state is saved after every validation, and ``resume=True`` continues from it.
    """
    import keras
    import tensorflow as tf

    if config.loss not in LOSSES:
        raise ValueError(f"unknown loss {config.loss!r}; choose one of {sorted(LOSSES)}")
    tail = split.tail
    loss_fn = LOSSES[config.loss]
    margin = config.resolved_margin
    variables = tail.trainable_variables
    optimizer = keras.optimizers.Adam(learning_rate=config.learning_rate)
    optimizer.build(variables)
    shape = list(train_acts.shape[2:])

    @tf.function(
        input_signature=[tf.TensorSpec([None, *shape], tf.float16), tf.TensorSpec([None], tf.int64)],
        reduce_retracing=True,
    )
    def train_step(x: Any, y: Any) -> tuple[Any, Any]:
        with tf.GradientTape() as tape:
            emb = tf.math.l2_normalize(tail(tf.cast(x, tf.float32), training=False), axis=1)
            loss, active = loss_fn(emb, y, margin)
        grads = tape.gradient(loss, variables)
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
        before = state.get("before") or evaluate(tail, val)
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
    while state["step"] < config.max_steps:
        if time.monotonic() - started > config.max_minutes * 60.0:
            stopped = "time"
            break
        idx, var, labels = sampler.batch()
        loss_t, active_t = train_step(train_acts[idx, var], labels)
        loss, active = float(loss_t), float(active_t)
        loss_avg = loss if math.isnan(loss_avg) else 0.95 * loss_avg + 0.05 * loss
        active_avg = active if math.isnan(active_avg) else 0.95 * active_avg + 0.05 * active
        state["step"] += 1
        if state["step"] % config.eval_every == 0 or state["step"] == config.max_steps:
            m = evaluate(tail, val)
            last_acc = m["accuracy"]
            state["history"].append(
                {
                    "step": state["step"],
                    "loss": loss_avg,
                    "active": active_avg,
                    "val_accuracy": m["accuracy"],
                    "val_tar_at_far_1e-3": m["tar_at_far_1e-3"],
                    "seconds": time.monotonic() - started,
                }
            )
            # A tie keeps the later (longer-trained) weights but does not reset the patience counter.
            if _score(m) >= _score(best_metrics):
                state["bad"] = 0 if _score(m) > _score(best_metrics) else state["bad"] + 1
                best_metrics, state["best_step"] = m, state["step"]
                best_weights = [v.numpy().copy() for v in variables]
            else:
                state["bad"] += 1
            state["best"] = best_metrics
            state["elapsed"] = time.monotonic() - started
            checkpoint()
            if state["bad"] >= config.patience:
                stopped = "early_stopping"
                on_step(StepReport(state["step"], config.max_steps, loss_avg, active_avg, last_acc))
                break
        on_step(StepReport(state["step"], config.max_steps, loss_avg, active_avg, last_acc))
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
