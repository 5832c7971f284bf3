"""Operating-point figures and the gate on synthetic embeddings (people = random unit centres plus noise): exact
figures on separable data, the paired bootstrap, and the gate's verdicts (identical -> rejected, clearly better ->
accepted, clearly worse -> rejected)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest

from embeddings.training.gate import judge, summary_lines
from embeddings.training.operating import compare, describe, figures, score_set


def _people(n_people: int, per_person: int, noise: float, seed: int) -> tuple[npt.NDArray[np.float32], np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_people, 128))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    labels = np.repeat(np.arange(n_people), per_person)
    e = centres[labels] + noise * rng.normal(size=(len(labels), 128)) / np.sqrt(128)
    return (e / np.linalg.norm(e, axis=1, keepdims=True)).astype(np.float32), labels


def test_separable_people_score_perfectly() -> None:
    emb, labels = _people(40, 4, 0.1, 0)
    f = figures(score_set(emb, labels))
    assert f["accuracy"] == pytest.approx(1.0) and f["tar_at_far_1e-3"] == 1.0 and f["tpir_at_fpir_1e-2"] == 1.0
    assert f["score"] == 1.0
    assert 0.0 < f["threshold"] < 1.0  # the best threshold sits at the last same-person distance


def test_counts_and_open_set_protocol() -> None:
    emb, labels = _people(10, 3, 0.5, 1)
    s = score_set(emb, labels)
    assert len(s.pos_d) == 10 * 3 and s.n_negative == 30 * 29 // 2 - 30
    assert len(s.probe_p) == 20  # the first image of each person is enrolled, the other 2 are probes
    # a probe's non-mated search excludes its own person: never closer than... its nearest other person
    assert np.all(np.isfinite(s.non_d))


def test_tar_at_far_counts_false_accepts_exactly() -> None:
    # 2 people x 2 images on a line: same-person distances 0.1 and 0.3, different-person ones >= 0.5
    emb = np.array([[1, 0], [np.cos(0.1), np.sin(0.1)], [0, 1], [np.sin(0.3), np.cos(0.3)]], dtype=np.float32)
    f = figures(score_set(emb, np.array([0, 0, 1, 1])))
    assert f["tar_at_far_1e-3"] == 1.0 and f["accuracy"] == pytest.approx(1.0)


def test_identical_models_are_rejected() -> None:
    emb, labels = _people(60, 4, 1.0, 2)
    s = score_set(emb, labels)
    cmp = compare(s, s, n_boot=50)
    assert all(v == 0.0 for v in cmp["delta"].values())
    assert all(ci == [0.0, 0.0] for ci in cmp["delta_ci95"].values())
    verdict = judge(cmp)
    assert verdict["accepted"] is False and "not better beyond noise" in verdict["reason"]


def test_clearly_better_is_accepted_and_worse_rejected() -> None:
    rng = np.random.default_rng(3)
    centres = rng.normal(size=(150, 128))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    labels = np.repeat(np.arange(150), 4)
    noise = rng.normal(size=(600, 128)) / np.sqrt(128)

    def embed(scale: float) -> npt.NDArray[np.float32]:
        e = centres[labels] + scale * noise  # the same images, less or more noise: a paired comparison
        return (e / np.linalg.norm(e, axis=1, keepdims=True)).astype(np.float32)

    noisy, clean = score_set(embed(1.3), labels), score_set(embed(0.9), labels)
    better = compare(noisy, clean, n_boot=100)
    assert better["delta"]["score"] > 0 and better["delta_ci95"]["score"][0] > 0
    assert judge(better)["accepted"] is True
    worse = compare(clean, noisy, n_boot=100)
    verdict = judge(worse)
    assert verdict["accepted"] is False and "worse beyond noise" in verdict["reason"]
    lines = summary_lines(worse, "gate")
    assert lines[0].startswith("gate: 150 people") and any("TPIR@FPIR1%" in line for line in lines)


def test_describe_interval_brackets_the_figure() -> None:
    emb, labels = _people(80, 3, 1.2, 4)
    d = describe(score_set(emb, labels), n_boot=60)
    for m in ("accuracy", "tar_at_far_1e-3", "tpir_at_fpir_1e-2"):
        lo, hi = d["ci95"][m]
        assert lo <= d[m] <= hi and hi - lo > 0
    assert d["people"] == 80 and d["probes"] == 160


def test_bootstrap_weights_match_duplicating_people() -> None:
    """A person drawn twice weighs like two copies of that person in the same-person pairs and probes."""
    emb, labels = _people(12, 3, 1.0, 5)
    s = score_set(emb, labels)
    w = np.ones(12)
    w[0] = 2.0
    weighted = figures(s, w)
    assert 0.0 <= weighted["tpir_at_fpir_1e-2"] <= 1.0
    assert figures(s, np.ones(12)) == pytest.approx(figures(s))
