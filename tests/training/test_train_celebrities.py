"""A few real fine-tuning steps on the 5-celebrity set with the real weights and MTCNN: the training loss falls,
the model directory and its card (gate figures before/after included) are written and valid, and the saved
weights load into ``FaceNetEncoder`` and give unit embeddings that differ from the pretrained ones. With 2
validation people the gate cannot see a gain beyond noise, so the run is rejected: it is kept here only because
``keep_rejected`` asks for it, and the registry refuses to select it. A run of zero steps and a run with a
ruinous learning rate are rejected and leave no model directory."""

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
        keep_rejected=True,
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
    assert model_dir is not None  # keep_rejected: the rejected run's directory is kept too
    from embeddings.facenet import FaceNetEncoder
    from embeddings.training.fit import _load_arrays
    from embeddings.training.model_dir import weights_file

    # The caches exist now, so prepare() only reloads them; its tail has the pretrained weights.
    p = prepare(root, options, weights=weights_path, work_dir=work)
    last = prepare(root, options, weights=weights_path, work_dir=work)
    # What training did: the LAST weights (the checkpoint's), whatever selection and the gate kept.
    (ckpt,) = (work / "checkpoints").iterdir()
    for v, a in zip(last.split.tail.trainable_variables, _load_arrays(ckpt / "weights.npz")["current"], strict=True):
        v.assign(a)
    x = np.asarray(p.train_acts[:, 0], np.float32)

    def train_loss(tail: Any) -> float:
        """The triplet loss over every training image (variant 0)."""
        emb = tf.math.l2_normalize(tail(x, training=False), axis=1)
        return float(semihard_triplet_loss(emb, p.train_labels, 0.2)[0])

    before, after = train_loss(p.split.tail), train_loss(last.split.tail)
    return {
        "dir": model_dir,
        "card": card,
        "before": before,
        "after": after,
        "steps": steps,
        "encoder": FaceNetEncoder(weights_file(model_dir)),
        "pretrained": FaceNetEncoder(weights_path),
        "models_root": tmp / "cache",
        "options": options,
        "work": work,
        "root": root,
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
    assert card["data"]["gate_people"] == 2 and card["data"]["gate_shares_selection_people"] is True
    for when in ("before", "after"):
        m = card["validation"][when]
        assert 0.5 <= m["accuracy"] <= 1.0 and 0.0 <= m["tar_at_far_1e-3"] <= 1.0
        assert 0.0 <= m["tpir_at_fpir_1e-2"] <= 1.0 and m["people"] == 2
        for key in ("accuracy", "tar_at_far_1e-3", "tpir_at_fpir_1e-2", "score"):
            lo, hi = m["ci95"][key]
            assert lo <= m[key] <= hi
    gate = card["gate"]
    assert set(gate["delta_ci95"]) == {"accuracy", "tar_at_far_1e-3", "tpir_at_fpir_1e-2", "score"}
    assert gate["accepted"] is False and card["status"] == "rejected"  # 2 gate people: no gain beyond noise
    assert 0.0 < card["threshold"] <= 2.0
    assert card["train_seconds"] > 0


def test_a_rejected_model_is_listed_but_not_selectable(trained: dict[str, Any]) -> None:
    from embeddings.models import RejectedModel, list_models, resolve_model

    model_id = trained["card"]["model_id"]
    models, broken = list_models(root=trained["models_root"])
    assert not broken
    info = next(m for m in models if m.model_id == model_id)
    assert info.status == "rejected" and not info.selectable
    assert info.summary()["status"] == "rejected" and info.summary()["selectable"] is False
    with pytest.raises(RejectedModel, match="rejected by the training gate"):
        resolve_model(model_id, root=trained["models_root"])


@pytest.mark.parametrize(
    ("steps", "lr", "reason"),
    [(0, 1e-4, "not better beyond noise"), (12, 0.5, "")],
    ids=["zero-steps", "ruinous-lr"],
)
def test_gate_rejects_a_model_that_is_not_better(
    trained: dict[str, Any], weights_path: Path, tmp_path: Path, steps: int, lr: float, reason: str
) -> None:
    from dataclasses import replace

    from embeddings.training.trainer import train_folder

    options = trained["options"]
    options = replace(
        options,
        keep_rejected=False,
        fit=replace(options.fit, max_steps=steps, learning_rate=lr, patience=100, selection="accuracy"),
    )
    model_dir, card = train_folder(
        trained["root"], options, weights=weights_path, work_dir=trained["work"], models_root=tmp_path
    )
    assert model_dir is None and not (tmp_path / "models").exists()
    assert card["status"] == "rejected" and card["gate"]["accepted"] is False
    assert reason in card["gate"]["reason"]
    assert card["params"]["steps"] == steps
    if steps == 0:
        assert card["validation"]["before"] == card["validation"]["after"]


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
    if trained["card"]["params"]["best_step"] == 0:
        # selection never improved on the starting model: the saved weights are the pretrained ones
        np.testing.assert_allclose(tuned, base, atol=1e-5)
    else:
        assert np.abs(tuned - base).max() > 1e-3  # the fine-tuned weights are really different
        assert (tuned * base).sum(axis=1).min() > 0.5  # ... and still close to where they started
