"""The fit loop on a tiny stand-in tail (the loop, not the network, is under test here; the real network is
trained in test_train_celebrities.py): a resumed run (with the distillation and L2-SP anchors, which must be
the STARTING model's, not the checkpoint's) ends exactly where an uninterrupted one does, and the checkpoint
refuses other training parameters."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from embeddings.training.fit import FitConfig, LabelledSet, fit
from embeddings.training.network import SplitModel


def _split() -> SplitModel:
    import keras

    keras.utils.set_random_seed(0)
    tail = keras.Sequential([keras.Input((3, 3, 8)), keras.layers.Flatten(), keras.layers.Dense(16)])
    return SplitModel(full=tail, head=None, tail=tail, cut="Mixed_7a")


def _data() -> tuple[np.ndarray, np.ndarray, LabelledSet]:
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(8), 4)
    centres = rng.normal(size=(8, 3, 3, 8))
    acts = (centres[labels][:, None] + 0.8 * rng.normal(size=(32, 2, 3, 3, 8))).astype(np.float16)
    val_acts = (centres[np.repeat(np.arange(4), 2)][:, None] + 0.8 * rng.normal(size=(8, 2, 3, 3, 8))).astype(
        np.float16
    )
    return acts, labels, LabelledSet(val_acts, np.repeat(np.arange(4), 2))


@pytest.mark.slow
def test_resume_matches_an_uninterrupted_run(tmp_path: Path) -> None:
    acts, labels, val = _data()
    cfg = FitConfig(
        people_per_batch=4, images_per_person=3, learning_rate=1e-2, eval_every=3, patience=100, distill=0.5, l2sp=1e-3
    )
    straight = _split()
    r_all = fit(straight, acts, labels, val, replace(cfg, max_steps=9))
    ckpt = tmp_path / "ckpt"
    first = _split()
    r1 = fit(first, acts, labels, val, replace(cfg, max_steps=6), checkpoint_dir=ckpt)
    assert r1.steps == 6 and (ckpt / "state.json").is_file()
    resumed = _split()
    r2 = fit(resumed, acts, labels, val, replace(cfg, max_steps=9), checkpoint_dir=ckpt, resume=True)
    assert r2.steps == 9 and len(r2.history) == 3
    assert [h["step"] for h in r2.history] == [h["step"] for h in r_all.history]
    assert r2.best_step == r_all.best_step
    for a, b in zip(straight.tail.get_weights(), resumed.tail.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert r2.history[-1]["loss"] == pytest.approx(r_all.history[-1]["loss"], rel=1e-5)
    with pytest.raises(ValueError, match="other training parameters"):
        fit(
            _split(),
            acts,
            labels,
            val,
            replace(cfg, max_steps=12, loss="contrastive"),
            checkpoint_dir=ckpt,
            resume=True,
        )
