"""The model registry: which embedding models exist and how to load one by id.

Two kinds of model, one namespace of ids:

* the pretrained model, :data:`embeddings.weights.MODEL_ID`: weights from :func:`embeddings.weights.resolve`
  (``FACEREC_WEIGHTS``, the cache or a fetch), threshold and figures from ``embeddings/model_card.json``;
* fine-tuned models, one directory each in ``<FACEREC_CACHE or ~/.cache/facerec>/models/<model_id>/`` holding
  ``model.weights.h5`` (the full network of :func:`embeddings.facenet.build_model`) and ``card.json``
  (written by :func:`embeddings.training.model_dir.save_model_dir`).

Every model maps aligned 160x160 RGB crops to 128-d unit embeddings; a model's ``threshold`` is the L2 distance
(in [0, 2], ``distance <= threshold`` = same person) its card recommends. Embeddings of different models are
not comparable, which is why the gallery keys every face by its model id.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from embeddings import weights as weights_mod
from embeddings.errors import FaceRecError
from embeddings.model_card import default_threshold, load_card
from embeddings.training.model_dir import models_dir, read_card, valid_model_id, weights_file

PRETRAINED_ID = weights_mod.MODEL_ID


class UnknownModel(FaceRecError):
    """No model with this id: neither the pretrained one nor a directory under the models dir."""

    code = "unknown_model"


class RejectedModel(FaceRecError):
    """A fine-tuned model the training gate rejected (kept with ``--keep-rejected``): listed, never selectable."""

    code = "rejected_model"


class InvalidModel(FaceRecError):
    """A model directory exists but cannot be used (card missing or invalid, weights file absent)."""

    code = "invalid_model"


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """One model of the registry.

    ``weights_path`` is None for the pretrained model (resolved, and fetched if needed, by
    :func:`embeddings.weights.resolve` when it is loaded); ``threshold`` is an L2 distance in [0, 2].
    """

    model_id: str
    kind: str
    """``"pretrained"`` or ``"fine-tuned"``."""
    threshold: float
    weights_path: Path | None
    directory: Path | None
    card: dict[str, Any] = field(repr=False)

    @property
    def status(self) -> str:
        """``pretrained``; for a fine-tuned model its card's gate verdict, ``accepted`` or ``rejected``, or
        ``ungated`` (a card written before the gate existed)."""
        if self.kind == "pretrained":
            return "pretrained"
        status = self.card.get("status")
        return status if status in ("accepted", "rejected") else "ungated"

    @property
    def selectable(self) -> bool:
        """Whether ``FACEREC_MODEL`` / ``facerec reindex --model`` may name it (not when the gate rejected it)."""
        return self.status != "rejected"

    def summary(self) -> dict[str, Any]:
        """The figures ``facerec models list`` shows: id, kind, base, threshold, validation before/after."""
        card = self.card
        validation = card.get("validation") if isinstance(card.get("validation"), dict) else {}
        out: dict[str, Any] = {
            "model_id": self.model_id,
            "kind": self.kind,
            "status": self.status,
            "selectable": self.selectable,
            "threshold": self.threshold,
            "base_model_id": card.get("base_model_id"),
            "created": card.get("created"),
            "directory": str(self.directory) if self.directory is not None else None,
        }
        if self.kind == "pretrained":
            lfw = card.get("evaluation", {}).get("lfw_view2", {})
            out["validation"] = {
                "lfw_view2": {"accuracy": lfw.get("accuracy_mean"), "tar_at_far_1e-3": lfw.get("tar_at_far_1e-3")}
            }
        else:
            out["validation"] = validation
            out["gate"] = card.get("gate")
            out["eval_root"] = card.get("eval_root")
            out["train_seconds"] = card.get("train_seconds")
        return out


def pretrained() -> ModelInfo:
    """The pretrained model; its weights are resolved lazily (see :func:`load_weights_path`)."""
    return ModelInfo(
        model_id=PRETRAINED_ID,
        kind="pretrained",
        threshold=default_threshold(),
        weights_path=None,
        directory=None,
        card=load_card(),
    )


def _from_dir(directory: Path) -> ModelInfo:
    try:
        card = read_card(directory)
    except ValueError as exc:
        raise InvalidModel(f"model directory {directory} is not usable: {exc}") from exc
    if card["model_id"] != directory.name:
        raise InvalidModel(
            f"model directory {directory} is not usable: its card names model {card['model_id']!r}, "
            f"not {directory.name!r}"
        )
    return ModelInfo(
        model_id=directory.name,
        kind="fine-tuned",
        threshold=float(card["threshold"]),
        weights_path=weights_file(directory),
        directory=directory,
        card=card,
    )


def resolve_model(model_id: str, *, root: Path | None = None) -> ModelInfo:
    """The selectable model with this id; :class:`UnknownModel` (listing the known ids), :class:`InvalidModel`,
    or :class:`RejectedModel` when the training gate rejected it.

    ``root`` is the cache dir (default ``FACEREC_CACHE`` or ``~/.cache/facerec``).
    """
    if model_id == PRETRAINED_ID:
        return pretrained()
    directory = models_dir(root) / model_id
    if not valid_model_id(model_id) or not directory.is_dir():
        known = [PRETRAINED_ID, *(p.name for p in _model_dirs(root))]
        raise UnknownModel(f"no model {model_id!r}; known models: {', '.join(known)} (in {models_dir(root)})")
    info = _from_dir(directory)
    if not info.selectable:
        gate = info.card.get("gate")
        gate = gate if isinstance(gate, dict) else {}
        raise RejectedModel(
            f"model {model_id!r} was rejected by the training gate ({gate.get('reason', 'not better')}) and cannot "
            "be selected; it is kept only for inspection (facerec models list). Use a model whose status is "
            "accepted, or the pretrained model"
        )
    return info


def _model_dirs(root: Path | None) -> list[Path]:
    parent = models_dir(root)
    if not parent.is_dir():
        return []
    return sorted(p for p in parent.iterdir() if p.is_dir() and not p.name.startswith("."))


def list_models(*, root: Path | None = None) -> tuple[list[ModelInfo], dict[str, str]]:
    """Every usable model (the pretrained one first, then the model directories by id), and for each unusable
    directory its name -> the reason."""
    models = [pretrained()]
    broken: dict[str, str] = {}
    for directory in _model_dirs(root):
        try:
            models.append(_from_dir(directory))
        except InvalidModel as exc:
            broken[directory.name] = exc.message
    return models, broken


def load_weights_path(info: ModelInfo) -> Path:
    """A path ``FaceNetEncoder`` can load: the model directory's weights, or the resolved pretrained ones."""
    return info.weights_path if info.weights_path is not None else weights_mod.resolve()


@lru_cache(maxsize=32)
def model_threshold(model_id: str) -> float:
    """The card threshold of ``model_id`` (L2 distance in [0, 2]); raises like :func:`resolve_model`. Cached:
    a model directory is written once, atomically, and never changed."""
    return resolve_model(model_id).threshold
