"""Fine-tuned model directories: ``<cache>/models/<model_id>/{model.weights.h5, card.json}``.

``model.weights.h5`` holds the FULL network of :func:`embeddings.facenet.build_model` (input 160x160x3
prewhitened, output the un-normalised 128-d bottleneck) saved with Keras ``save_weights``, so
``FaceNetEncoder(dir / WEIGHTS_FILE)`` loads it exactly like the pretrained weights. ``card.json`` records what
the model was trained on, how, and how it scored before and after (see docs/FINETUNE.md). A directory is written
into a temporary sibling and renamed into place, so a reader never sees half of one.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

WEIGHTS_FILE = "model.weights.h5"
CARD_FILE = "card.json"
REQUIRED_CARD_KEYS = (
    "model_id",
    "base_model_id",
    "created",
    "threshold",
    "data",
    "params",
    "validation",
    "train_seconds",
)
_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def models_dir(root: Path | None = None) -> Path:
    """``<FACEREC_CACHE or ~/.cache/facerec>/models``."""
    from embeddings.weights import cache_dir

    return (root or cache_dir()) / "models"


def utc_stamp(now: datetime | None = None) -> str:
    """``yyyymmddHHMMSS`` in UTC."""
    return (now or datetime.now(UTC)).strftime("%Y%m%d%H%M%S")


def name_slug(name: str) -> str:
    """``name`` reduced to ``[a-z0-9-]``, at most 60 characters (``"model"`` when nothing is left): a safe path
    component."""
    return (re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "model")[:60]


def make_model_id(name: str, now: datetime | None = None) -> str:
    """``ft-<slug of name>-<UTC yyyymmddHHMMSS>`` (:func:`name_slug`)."""
    return f"ft-{name_slug(name)}-{utc_stamp(now)}"


def valid_model_id(model_id: str) -> bool:
    """A model id is a safe single path component (letters, digits, ``.``, ``_``, ``-``; no leading dot)."""
    return bool(_ID_RE.match(model_id)) and model_id not in {".", ".."}


def validate_card(card: dict[str, Any]) -> None:
    """Raise ``ValueError`` when ``card`` lacks a required key or has an invalid id or threshold."""
    missing = [k for k in REQUIRED_CARD_KEYS if k not in card]
    if missing:
        raise ValueError(f"model card lacks {missing}")
    if not isinstance(card["model_id"], str) or not valid_model_id(card["model_id"]):
        raise ValueError(f"invalid model_id {card['model_id']!r}")
    threshold = card["threshold"]
    if not isinstance(threshold, int | float) or not 0.0 < float(threshold) <= 2.0:
        raise ValueError(f"threshold {threshold!r} is not an L2 distance in (0, 2]")
    validation = card["validation"]
    if not isinstance(validation, dict) or not {"before", "after"} <= set(validation):
        raise ValueError("validation must have 'before' and 'after'")


def save_model_dir(model: Any, card: dict[str, Any], root: Path | None = None) -> Path:
    """Write ``model``'s weights and ``card`` to ``models_dir(root)/<card['model_id']>`` atomically.

    ``model`` is the full network of ``build_model()`` (anything with ``save_weights``). ``created`` is filled
    in (ISO UTC) when absent. Raises ``FileExistsError`` if that model id already exists. Returns the directory.
    """
    card = dict(card)
    card.setdefault("created", datetime.now(UTC).isoformat(timespec="seconds"))
    validate_card(card)
    parent = models_dir(root)
    parent.mkdir(parents=True, exist_ok=True)
    final = parent / card["model_id"]
    if final.exists():
        raise FileExistsError(f"model {card['model_id']!r} already exists at {final}")
    tmp = Path(tempfile.mkdtemp(prefix=f".{card['model_id']}.", suffix=".tmp", dir=parent))
    try:
        model.save_weights(str(tmp / WEIGHTS_FILE))
        (tmp / CARD_FILE).write_text(json.dumps(card, indent=2, sort_keys=False) + "\n")
        with open(tmp / CARD_FILE, "rb") as f:
            os.fsync(f.fileno())
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def read_card(model_dir: Path) -> dict[str, Any]:
    """The validated card of a model directory; ``ValueError`` if it is missing, unreadable or invalid, or if
    the weights file is absent."""
    model_dir = Path(model_dir)
    try:
        card: dict[str, Any] = json.loads((model_dir / CARD_FILE).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{model_dir}: unreadable {CARD_FILE}: {exc}") from exc
    if not isinstance(card, dict):
        raise ValueError(f"{model_dir}: {CARD_FILE} is not an object")
    validate_card(card)
    if not (model_dir / WEIGHTS_FILE).is_file():
        raise ValueError(f"{model_dir}: {WEIGHTS_FILE} is missing")
    return card


def weights_file(model_dir: Path) -> Path:
    """The weights file of a model directory (for ``FaceNetEncoder``)."""
    return Path(model_dir) / WEIGHTS_FILE
