"""Verification metrics on hand-made distances, and parsing of the LFW pairs formats."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from embeddings.evaluation import (
    best_threshold,
    eer,
    kfold_accuracy,
    plot_histogram,
    plot_roc,
    read_pairs,
    roc,
    summarize,
    tar_at_far,
)


def test_read_view2_pairs(tmp_path: Path) -> None:
    lines = ["2 1", "Ann 1 2", "Ann 1 Bob 3", "Cid 2 4", "Dee 1 Eve 12"]
    f = tmp_path / "pairs.txt"
    f.write_text("\n".join(lines) + "\n")
    pairs = read_pairs(f)
    assert [(p.a, p.b, p.same, p.fold) for p in pairs] == [
        ("Ann/Ann_0001.jpg", "Ann/Ann_0002.jpg", True, 0),
        ("Ann/Ann_0001.jpg", "Bob/Bob_0003.jpg", False, 0),
        ("Cid/Cid_0002.jpg", "Cid/Cid_0004.jpg", True, 1),
        ("Dee/Dee_0001.jpg", "Eve/Eve_0012.jpg", False, 1),
    ]


def test_read_view1_pairs_is_one_fold(tmp_path: Path) -> None:
    f = tmp_path / "pairsDevTest.txt"
    f.write_text("1\nAnn 1 2\nAnn 1 Bob 1\n")
    pairs = read_pairs(f)
    assert {p.fold for p in pairs} == {0} and [p.same for p in pairs] == [True, False]


def test_pairs_count_mismatch_is_an_error(tmp_path: Path) -> None:
    f = tmp_path / "pairs.txt"
    f.write_text("1 2\nAnn 1 2\n")
    with pytest.raises(ValueError, match="expected 4 pairs"):
        read_pairs(f)


def test_best_threshold_separates_perfectly_separable_scores() -> None:
    d = np.array([0.2, 0.4, 0.6, 1.2, 1.4, 1.6])
    same = np.array([True, True, True, False, False, False])
    t = best_threshold(d, same)
    assert 0.6 < t < 1.2


def test_kfold_accuracy_uses_held_out_folds() -> None:
    rng = np.random.default_rng(0)
    n = 200
    same = np.tile([True, False], n // 2)
    d = np.where(same, rng.normal(0.8, 0.1, n), rng.normal(1.4, 0.1, n))
    folds = np.repeat(np.arange(10), n // 10)
    res = kfold_accuracy(d, same, folds)
    assert len(res.accuracies) == 10 and res.mean > 0.98
    assert all(0.9 < t < 1.3 for t in res.thresholds)


def test_roc_tar_at_far_and_eer() -> None:
    d = np.array([0.1, 0.2, 0.3, 0.9, 0.5, 1.0, 1.1, 1.2])
    same = np.array([True, True, True, True, False, False, False, False])
    curve = roc(d, same)
    tar, th = tar_at_far(curve, 0.0)
    assert tar == pytest.approx(0.75) and th < 0.5  # before the first impostor at 0.5
    tar25, _ = tar_at_far(curve, 0.25)
    assert tar25 == pytest.approx(1.0)  # threshold 0.9 accepts every genuine pair and one impostor in four
    rate, _ = eer(curve)
    assert rate == pytest.approx(0.25)


def test_summarize_and_plots(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    same = np.tile([True, False], 300)
    d = np.clip(np.where(same, rng.normal(0.9, 0.15, 600), rng.normal(1.4, 0.1, 600)), 0, 2)
    folds = np.repeat(np.arange(10), 60)
    s = summarize(d, same, folds)
    assert s["pairs"] == 600 and s["folds"] == 10
    assert 0.9 < s["accuracy_mean"] <= 1.0 and s["tar_at_far_1e-2"] <= 1.0
    assert 0.0 <= s["far_at_threshold"] < 0.1
    plot_roc(d, same, tmp_path / "roc.png", "t")
    plot_histogram(d, same, s["threshold"], tmp_path / "hist.png", "t")
    assert (tmp_path / "roc.png").read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "hist.png").stat().st_size > 1000
