"""The model card shipped next to the code: which weights, how they were evaluated, the default threshold."""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources
from typing import Any

CARD_FILE = "model_card.json"


@lru_cache(maxsize=1)
def load_card() -> dict[str, Any]:
    """The pretrained model's card (``embeddings/model_card.json``)."""
    text = resources.files("embeddings").joinpath(CARD_FILE).read_text()
    card: dict[str, Any] = json.loads(text)
    return card


def default_threshold() -> float:
    """The default verification threshold: L2 distance between unit embeddings, ``d <= threshold`` = same person."""
    return float(load_card()["threshold"]["value"])
