"""Fast unit tests of the training pieces that need no weights: losses and mining, sampler, augmentation, split,
and the model directory contract."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from embeddings.training import augment, data, losses
from embeddings.training.model_dir import make_model_id, name_slug, read_card, save_model_dir, valid_model_id
from embeddings.training.sampler import PKSampler
from embeddings.training.trainer import default_work_dir


def _np_semihard(emb: np.ndarray, labels: np.ndarray, margin: float) -> tuple[float, float]:
    """Reference: loop over anchor-positive pairs, semi-hard negative else the farthest one."""
    d = ((emb[:, None, :] - emb[None, :, :]) ** 2).sum(-1)
    terms = []
    for a in range(len(emb)):
        for p in range(len(emb)):
            if a == p or labels[a] != labels[p]:
                continue
            negs = d[a][labels != labels[a]]
            beyond = negs[negs > d[a, p]]
            dn = beyond.min() if len(beyond) else negs.max()
            terms.append(max(d[a, p] - dn + margin, 0.0))
    t = np.array(terms)
    return float(t.mean()), float((t > 0).mean())


def test_triplet_known_value() -> None:
    # d01 = 2 (same person), d02 = 0.8, d12 = 0.4 (squared): no semi-hard negative, so the farthest one is used.
    emb = np.array([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]], np.float32)
    loss, active = losses.semihard_triplet_loss(emb, np.array([0, 0, 1]), margin=0.2)
    assert float(loss) == pytest.approx(((2 - 0.8 + 0.2) + (2 - 0.4 + 0.2)) / 2, abs=1e-5)
    assert float(active) == pytest.approx(1.0)


def test_triplet_zero_when_separated() -> None:
    emb = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]], np.float32)
    loss, active = losses.semihard_triplet_loss(emb, np.array([0, 0, 1, 1]), margin=0.2)
    assert float(loss) == pytest.approx(0.0, abs=1e-6)
    assert float(active) == pytest.approx(0.0)


def test_triplet_matches_reference_on_random_batch() -> None:
    rng = np.random.default_rng(3)
    emb = rng.normal(size=(24, 8)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    labels = np.repeat(np.arange(6), 4)
    loss, active = losses.semihard_triplet_loss(emb, labels, margin=0.2)
    ref_loss, ref_active = _np_semihard(emb.astype(np.float64), labels, 0.2)
    assert float(loss) == pytest.approx(ref_loss, abs=1e-4)
    assert float(active) == pytest.approx(ref_active, abs=1e-6)
    assert 0.0 < ref_active <= 1.0


def test_contrastive_known_value() -> None:
    # Same pair (0, 1) at d^2 = 2; different pairs: (0, 2) at d = 0 -> 1.1^2, (1, 2) at d = sqrt(2) > 1.1 -> 0.
    emb = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]], np.float32)
    loss, active = losses.contrastive_loss(emb, np.array([0, 0, 1]), margin=1.1)
    assert float(loss) == pytest.approx(2.0 + (2 * 1.21) / 4, abs=1e-4)
    assert float(active) == pytest.approx(4 / 6, abs=1e-6)


def test_pk_sampler_batches() -> None:
    labels = np.repeat(np.arange(10), [2, 3, 5, 8, 2, 2, 4, 6, 3, 2])
    sampler = PKSampler(labels, people_per_batch=4, images_per_person=3, n_variants=4, rng=np.random.default_rng(0))
    seen: set[int] = set()
    for _ in range(5):
        idx, var, lab = sampler.batch()
        assert len(idx) == len(var) == len(lab) == 12
        assert (labels[idx] == np.unique(labels)[lab]).all()
        people, counts = np.unique(lab, return_counts=True)
        assert len(people) == 4 and (counts == 3).all()
        assert ((var >= 0) & (var < 4)).all()
        seen.update(int(p) for p in people)
    assert seen == set(range(10))  # 20 draws without replacement per cycle cover all 10 people


def test_degrade_is_deterministic_gray_and_lossy() -> None:
    rng = np.random.default_rng(0)
    crop = rng.integers(0, 256, (160, 160, 3), dtype=np.uint8)
    a, b = augment.degrade(crop), augment.degrade(crop)
    assert a.shape == crop.shape and a.dtype == np.uint8
    assert np.array_equal(a, b)
    assert np.array_equal(a[..., 0], a[..., 1]) and np.array_equal(a[..., 1], a[..., 2])
    assert np.abs(a.astype(int) - crop.astype(int)).mean() > 20  # high-frequency noise is gone


def test_variants_are_reproducible() -> None:
    crop = np.random.default_rng(1).integers(0, 256, (160, 160, 3), dtype=np.uint8)
    v1 = augment.variants(crop, 4, np.random.default_rng([7, 3]))
    v2 = augment.variants(crop, 4, np.random.default_rng([7, 3]))
    assert len(v1) == 4
    assert np.array_equal(v1[0], crop) and np.array_equal(v1[1], crop[:, ::-1])
    assert all(np.array_equal(x, y) for x, y in zip(v1, v2, strict=True))
    assert not np.array_equal(v1[2], v1[3])


def test_split_is_by_person(tmp_path: Path) -> None:
    for person, n in {"a": 3, "b": 2, "c": 4, "d": 1, "e": 2, "f": 5}.items():
        (tmp_path / person).mkdir()
        for i in range(n):
            (tmp_path / person / f"{person}_{i}.jpg").write_bytes(b"x")
    people = data.scan_people(tmp_path, min_images=2, exclude=("f",))
    assert sorted(people) == ["a", "b", "c", "e"]  # d has one image, f is excluded
    split = data.split_people(people, val_fraction=0.25, seed=0)
    assert set(split.train).isdisjoint(split.val)
    assert set(split.train) | set(split.val) == set(people)
    assert len(split.val) == 2
    pairs, same = data.validation_pairs(split.val, max_pairs=100, seed=0)
    for (a, b), s in zip(pairs, same, strict=True):
        assert (a.split("/")[0] == b.split("/")[0]) == s


class _FakeModel:
    """Stands in for a Keras model here: the contract under test is the directory, not the network."""

    def save_weights(self, path: str) -> None:
        Path(path).write_bytes(b"weights")


def _card(model_id: str) -> dict[str, object]:
    return {
        "model_id": model_id,
        "base_model_id": "facenet-20170512-110547",
        "threshold": 1.05,
        "data": {},
        "params": {},
        "validation": {"before": {}, "after": {}},
        "train_seconds": 1.0,
    }


def test_model_dir_contract(tmp_path: Path) -> None:
    model_id = make_model_id("My Camera #2")
    assert model_id.startswith("ft-my-camera-2-") and valid_model_id(model_id)
    for name in ("/tmp/abs", "../../x", "a/../../b"):  # a --name never leaves the cache as a work dir
        assert "/" not in name_slug(name) and ".." not in name_slug(name)
        assert default_work_dir(name).parent.name == "training"
    out = save_model_dir(_FakeModel(), _card(model_id), tmp_path)
    assert out == tmp_path / "models" / model_id
    card = read_card(out)
    assert card["model_id"] == model_id and card["created"].endswith("+00:00")
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == [model_id]  # no temp dir left behind
    with pytest.raises(FileExistsError):
        save_model_dir(_FakeModel(), _card(model_id), tmp_path)
    bad = dict(_card("ft-x-1"), threshold=3.0)
    with pytest.raises(ValueError, match="threshold"):
        save_model_dir(_FakeModel(), bad, tmp_path)
    assert not (tmp_path / "models" / "ft-x-1").exists()
    with pytest.raises(ValueError, match="model_id"):
        save_model_dir(_FakeModel(), _card("../escape"), tmp_path)
    (out / "card.json").write_text(json.dumps({"model_id": model_id}))
    with pytest.raises(ValueError, match="lacks"):
        read_card(out)
