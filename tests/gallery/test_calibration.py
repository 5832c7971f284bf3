"""Open-set calibration: per-probe tables fitted by person, FIR grows with gallery size, per-model lookup."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from service.gallery.calibration import (
    SHIPPED_DIR,
    Calibration,
    comparisons,
    fir_from_far,
    fit_calibration,
    load_calibration,
    open_set_estimate,
    subject_scores,
    tables_path,
)
from service.gallery.matching import RULE, RULES, subject_distances, template
from tests.gallery.conftest import unit

PRETRAINED = "facenet-20170512-110547"


def people(rng: np.random.Generator, n_people: int = 300, spread: float = 0.8) -> tuple[np.ndarray, np.ndarray]:
    """Clustered unit vectors: 1-6 "photos" of each of ``n_people`` "people"."""
    centres = unit(rng, n_people)
    xs, labels = [], []
    for i, c in enumerate(centres):
        k = int(rng.integers(1, 7))
        x = c + spread * rng.standard_normal((k, 128)).astype(np.float32) / np.sqrt(128)
        xs.append(x / np.linalg.norm(x, axis=1, keepdims=True))
        labels += [i] * k
    return np.concatenate(xs).astype(np.float32), np.array(labels)


@pytest.fixture
def fitted(rng) -> Calibration:
    x, labels = people(rng)
    return fit_calibration(x, labels, model_id="m", source="synthetic", probes=500)


def test_fit_counts_only_other_people(rng, fitted: Calibration) -> None:
    assert fitted.counts.shape == (len(fitted.n), len(fitted.thresholds))
    assert (fitted.n == fitted.people - 1).all()  # every probe meets every other person's subject once
    assert (np.diff(fitted.counts, axis=1) >= 0).all() and (fitted.counts[:, -1] <= fitted.n).all()
    assert fitted.rule == RULE


def test_fir_grows_with_gallery_size_and_the_threshold_inverts_it(fitted: Calibration) -> None:
    t = 1.1
    firs = [fitted.false_identification_rate(t, n) for n in (1, 10, 100, 1000, 5000)]
    assert firs == sorted(firs) and firs[-1] > firs[0]
    assert firs[0] == pytest.approx(fitted.pooled_rate(t), rel=0.05)  # one comparison: the pooled rate
    t_small, t_big = fitted.threshold_for_fir(0.01, 10), fitted.threshold_for_fir(0.01, 1000)
    assert t_big < t_small
    for n, thr in ((10, t_small), (1000, t_big)):
        assert fitted.false_identification_rate(thr, n) <= 0.0101
        assert fitted.false_identification_rate(thr + 0.02, n) > 0.01
    with pytest.raises(ValueError):
        fitted.threshold_for_fir(0.0, 10)
    assert fitted.false_identification_rate(t, 0) == 0.0
    assert fir_from_far(1e-3, 1000) == pytest.approx(0.632, abs=1e-3) and fir_from_far(0.0, 10**6) == 0.0


def test_the_prior_makes_thin_data_conservative(fitted: Calibration) -> None:
    # a probe that met no impostor within t still counts as meeting some in a gallery far larger than the fit
    t = fitted.threshold_for_fir(0.001, 100)
    bare = dataclasses.replace(fitted, prior=0.0)
    assert fitted.false_identification_rate(t, 5000) >= bare.false_identification_rate(t, 5000)
    assert bare.threshold_for_fir(0.001, 100) >= t  # its own answer, not the remembered one of ``fitted``


def test_a_remembered_threshold_is_the_one_solved(fitted: Calibration) -> None:
    questions = [(0.01, 10), (0.01, 5000), (0.001, 10), (0.01, 10)]
    first = [fitted.threshold_for_fir(target, n) for target, n in questions]
    fresh = dataclasses.replace(fitted)
    assert first == [fresh.threshold_for_fir(target, n) for target, n in questions]
    assert first[0] == first[3] and first[1] < first[0] and first[2] < first[0]


def test_fir_estimate_matches_fresh_people(rng) -> None:
    """Fit on some synthetic people, measure on others: the estimate is within 2x of the measured FPIR."""
    x, labels = people(rng, 1200)
    fit = labels < 600
    cal = fit_calibration(x[fit], labels[fit], model_id="m", source="synthetic", probes=3000)
    gallery_people = np.arange(600, 900)
    subjects = [x[labels == p][:2] for p in gallery_people]
    strangers = x[labels >= 900]
    best = subject_scores(strangers, subjects, rule=RULE).min(axis=1)
    t = cal.threshold_for_fir(0.05, len(subjects))
    measured = float((best <= t).mean())
    assert 0.025 / 2 <= measured <= 0.05 * 2, measured


def test_save_load_round_trip_and_validation(tmp_path: Path, fitted: Calibration) -> None:
    path = tmp_path / "t.npz"
    fitted.save(path)
    again = Calibration.load(path)
    assert again.model_id == "m" and again.rule == fitted.rule and again.people == fitted.people
    assert (again.counts == fitted.counts).all() and (again.n == fitted.n).all()
    assert again.false_identification_rate(1.0, 100) == fitted.false_identification_rate(1.0, 100)
    path.write_bytes(b"not a table")
    with pytest.raises(ValueError):
        Calibration.load(path)


def test_tables_are_per_model(tmp_path: Path, fitted: Calibration) -> None:
    assert load_calibration("ft-never-calibrated", cache=tmp_path) is None  # never another model's tables
    fitted.save(tmp_path / "calibration" / "m.npz")
    assert tables_path("m", cache=tmp_path) == tmp_path / "calibration" / "m.npz"
    got = load_calibration("m", cache=tmp_path)
    assert got is not None and got.model_id == "m"
    # a file named for one model but fitted for another is refused
    fitted.save(tmp_path / "calibration" / "other.npz")
    assert load_calibration("other", cache=tmp_path) is None


def test_shipped_pretrained_tables(tmp_path: Path) -> None:
    path = SHIPPED_DIR / f"{PRETRAINED}.npz"
    assert path.is_file()
    cal = load_calibration(PRETRAINED, cache=tmp_path)
    assert cal is not None and cal.rule == RULE and "LFW" in cal.source
    assert cal.people > 2000 and len(cal.n) >= 2000
    # a real face model: strangers rarely within 0.8 of someone; the threshold tightens with the gallery
    assert cal.pooled_rate(0.8) < 1e-3
    assert cal.threshold_for_fir(0.01, 5000) < cal.threshold_for_fir(0.01, 100) < 1.2


def test_open_set_estimate_counts_what_the_rule_compares(fitted: Calibration) -> None:
    assert open_set_estimate(None, 1.0, 10, 30) is None
    assert open_set_estimate(fitted, 1.0, 0, 0) is None
    assert comparisons("template", 10, 30) == 10 and comparisons("nearest", 10, 30) == 30
    est = open_set_estimate(fitted, 1.0, 10, 30)
    assert est == fitted.false_identification_rate(1.0, comparisons(fitted.rule, 10, 30))


def test_rules_agree_with_the_vectorised_scores(rng) -> None:
    x, labels = people(rng, 20)
    subjects = [x[labels == i] for i in range(20)]
    probes = x[:7]
    weights = [np.linspace(0.5, 1.0, len(s)) for s in subjects]
    for rule in RULES:
        fast = subject_scores(probes, subjects, rule=rule, weights=weights)
        slow = np.stack(
            [subject_distances(probes, s, rule=rule, weights=list(w)) for s, w in zip(subjects, weights, strict=True)],
            axis=1,
        )
        assert np.allclose(fast, slow, atol=1e-5), rule
    t = template(subjects[0])
    assert np.linalg.norm(t) == pytest.approx(1.0, abs=1e-6)
