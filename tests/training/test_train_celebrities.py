"""A few real fine-tuning steps on the 5-celebrity set with the real weights and MTCNN: the training loss falls,
the model directory and its card are written and valid, and the saved weights load into ``FaceNetEncoder`` and
give unit embeddings that differ from the pretrained ones."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from embeddings.training.fit import FitConfig
from embeddings.training.trainer import TrainOptions, prepare

pytestmark = pytest.mark.slow  # trains on the real weights


@pytest.fixture(scope="module")
def trained(celebrity_root: Path, weights_path: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    import tensorflow as tf

    from embeddings.training.losses import semihard_triplet_loss
    from embeddings.training.trainer import train_folder

    tmp = tmp_path_factory.mktemp("train")
    options = TrainOptions(
        name="celebs",
        fit=FitConfig(
            loss="triplet", people_per_batch=3, images_per_person=6, learning_rate=1e-4, max_steps=16, eval_every=8
        ),
        n_variants=2,
        val_fraction=0.4,
    )
    root = celebrity_root / "train"
    work = tmp / "work"

    steps: list[float] = []
    model_dir, card = train_folder(
        root,
        options,
        weights=weights_path,
        work_dir=work,
        models_root=tmp / "cache",
        on_step=lambda r: steps.append(r.loss),
    )
    from embeddings.facenet import FaceNetEncoder
    from embeddings.models import load_weights_path, resolve_model
    from embeddings.training.network import split_model

    # The caches exist now, so prepare() only reloads them; its tail has the pretrained weights.
    p = prepare(root, options, weights=weights_path, work_dir=work)
    tuned = split_model(model_dir / "model.weights.h5", options.cut)
    x = np.asarray(p.train_acts[:, 0], np.float32)

    def train_loss(tail: Any) -> float:
        """The triplet loss over every training image (variant 0)."""
        emb = tf.math.l2_normalize(tail(x, training=False), axis=1)
        return float(semihard_triplet_loss(emb, p.train_labels, 0.2)[0])

    before, after = train_loss(p.split.tail), train_loss(tuned.tail)
    return {
        "dir": model_dir,
        "card": card,
        "before": before,
        "after": after,
        "steps": steps,
        # Loaded the way the service loads a model: through the registry (FACEREC_MODEL=<model_id>).
        "encoder": FaceNetEncoder(load_weights_path(resolve_model(card["model_id"], root=tmp / "cache"))),
        "pretrained": FaceNetEncoder(weights_path),
        "models_root": tmp / "cache",
    }


def test_training_loss_falls(trained: dict[str, Any]) -> None:
    assert len(trained["steps"]) == 16
    assert trained["after"] < 0.9 * trained["before"], (trained["before"], trained["after"])


def test_model_dir_and_card(trained: dict[str, Any]) -> None:
    from embeddings.training.model_dir import read_card

    model_dir: Path = trained["dir"]
    assert model_dir.parent == trained["models_root"] / "models"
    card = read_card(model_dir)
    assert card == {**trained["card"], "created": card["created"]}
    assert card["model_id"].startswith("ft-celebs-") and model_dir.name == card["model_id"]
    assert card["base_model_id"] == "facenet-20170512-110547"
    assert 0.0 < card["threshold"] <= 2.0
    assert card["data"]["train_people"] == 3 and card["data"]["val_people"] == 2
    assert card["params"]["loss"] == "triplet" and card["params"]["margin"] == 0.2
    assert card["params"]["freeze_up_to"] == "Mixed_7a" and card["params"]["steps"] == 16
    for when in ("before", "after"):
        m = card["validation"][when]
        assert 0.5 <= m["accuracy"] <= 1.0 and 0.0 <= m["tar_at_far_1e-3"] <= 1.0 and 0 < m["threshold"] <= 2
    assert card["train_seconds"] > 0


def test_saved_weights_load_into_encoder(trained: dict[str, Any], celebrity_root: Path, analyzer: Any) -> None:
    faces = []
    for person in ("madonna", "elton_john"):
        img = sorted((celebrity_root / "val" / person).iterdir())[0]
        image = analyzer.load_image(img.read_bytes())
        faces.append(analyzer.align(image, analyzer.single_face(image, largest=True, check_quality=False).detection))
    crops = np.stack(faces)
    tuned = trained["encoder"].encode(crops)
    base = trained["pretrained"].encode(crops)
    assert tuned.shape == (2, 128) and tuned.dtype == np.float32
    assert np.allclose(np.linalg.norm(tuned, axis=1), 1.0, atol=1e-5)
    assert np.abs(tuned - base).max() > 1e-3  # the fine-tuned weights are really different
    assert (tuned * base).sum(axis=1).min() > 0.5  # ... and still close to where they started
