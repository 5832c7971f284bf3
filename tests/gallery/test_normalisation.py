"""Cohort score normalisation: the spread and score math on hand-made vectors, the fit's leave-out scores against
a brute force, the table's thresholds and FIR, files per model; the subjects' spreads kept per template content,
with identify's scores on a real gallery unchanged by them as faces are enrolled and erased."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from service.gallery import LocalGallery
from service.gallery.calibration import SHIPPED_DIR, l2_matrix, sample_people
from service.gallery.matching import RULE
from service.gallery.normalisation import (
    SAME_PERSON_L2,
    SUFFIX,
    Normalisation,
    SpreadCache,
    fit_normalisation,
    load_normalisation,
    normalised_scores,
    spreads,
    stranger_scores,
)
from service.recognition.identification import rank_subjects
from tests.gallery.conftest import MODEL, faces, unit
from tests.gallery.test_calibration import PRETRAINED, people

E = np.eye(2, dtype=np.float32)
COHORT = np.stack([E[0], E[1], -E[0], -E[1]])
"""Four unit vectors in 2-d: at distances 0, sqrt(2), 2, sqrt(2) from e0."""


def test_spread_is_the_mean_distance_to_the_k_nearest_cohort_members() -> None:
    r2 = np.sqrt(2.0)
    # e0's own template in the cohort (distance 0, under SAME_PERSON_L2) is not counted: the others are
    assert spreads(E[:1], COHORT, k=1) == pytest.approx([r2])
    assert spreads(E[:1], COHORT, k=2) == pytest.approx([r2])
    assert spreads(E[:1], COHORT, k=3) == pytest.approx([(2 * r2 + 2) / 3])
    diag = (E[0] + E[1]) / np.sqrt(2.0)  # 45 degrees: e0 and e1 at 2 sin(22.5°), the others at 2 sin(67.5°)
    near, far = 2 * np.sin(np.pi / 8), 2 * np.sin(3 * np.pi / 8)
    assert spreads(diag[None].astype(np.float32), COHORT, k=3) == pytest.approx([(2 * near + far) / 3], abs=1e-6)
    assert spreads(E, COHORT, k=10) == pytest.approx([(r2 * 2 + 2) / 3] * 2)  # k beyond the cohort: all others
    assert near > SAME_PERSON_L2  # the diagonal's nearest members are other people


def test_score_is_the_distance_minus_the_mean_of_both_spreads() -> None:
    d = np.array([[0.8, 1.0], [0.5, 1.4]])
    got = normalised_scores(d, np.array([1.0, 0.6]), np.array([0.9, 1.1]))
    assert got == pytest.approx(np.array([[0.8 - 0.95, 1.0 - 1.05], [0.5 - 0.75, 1.4 - 0.85]]))
    # a crowded probe (small spread) scores higher (less alike) at the same distance than a lonely one
    assert got[1, 0] > -0.5 and normalised_scores(d[:1, :1], np.array([0.2]), np.array([0.2]))[0, 0] > got[0, 0]


def test_normalisation_scores_pairs_as_the_formula_says(rng) -> None:
    x, labels = people(rng, n_people=40)
    norm = fit_normalisation(sample_people(x, labels, probes=50), model_id="m", source="synthetic", k=4)
    p, t = x[:3], norm.cohort[5:9]
    want = l2_matrix(p, t) - 0.5 * (spreads(p, norm.cohort, 4)[:, None] + spreads(t, norm.cohort, 4)[None, :])
    assert norm.scores(p, t) == pytest.approx(want)


def test_fit_scores_each_stranger_pair_with_both_people_left_out_of_the_cohort(rng) -> None:
    x, labels = people(rng, n_people=30)
    cohort = np.stack([x[labels == i][0] for i in range(30)])
    picks = rng.permutation(len(x))[:20]
    k = 3
    got = stranger_scores(x[picks], labels[picks], cohort, k)
    for row, i in enumerate(picks):
        own = int(labels[i])
        assert got[row, own] == np.inf
        for s in range(30):
            if s == own:
                continue
            rest = np.delete(cohort, [own, s], axis=0)  # neither the stranger's person nor the subject
            want = l2_matrix(x[i : i + 1], cohort[s : s + 1])[0, 0] - 0.5 * (
                spreads(x[i : i + 1], rest, k)[0] + spreads(cohort[s : s + 1], rest, k)[0]
            )
            assert got[row, s] == pytest.approx(want, abs=1e-9)


def test_the_table_is_on_the_score_scale_and_tightens_with_the_gallery(rng) -> None:
    x, labels = people(rng, n_people=200)
    norm = fit_normalisation(sample_people(x, labels, probes=600), model_id="m", source="synthetic")
    table = norm.table
    assert table.rule == RULE and table.people == 200 and (table.n == 199).all()
    assert table.thresholds[0] < 0 < table.thresholds[-1]
    t10, t100 = table.threshold_for_fir(0.01, 10), table.threshold_for_fir(0.01, 100)
    assert t100 < t10 < table.thresholds[-1]
    assert table.false_identification_rate(t10, 10) == pytest.approx(0.01, abs=1e-3)
    assert table.false_identification_rate(t10, 100) > 0.01  # same threshold, bigger gallery: more strangers named


def test_too_few_people_for_a_cohort_is_an_error(rng) -> None:
    x, labels = people(rng, n_people=8)
    with pytest.raises(ValueError, match="at least 13 people"):
        fit_normalisation(sample_people(x, labels), model_id="m", source="synthetic")


def test_save_load_and_lookup_per_model(tmp_path: Path, rng) -> None:
    x, labels = people(rng, n_people=40)
    norm = fit_normalisation(sample_people(x, labels, probes=100), model_id="m", source="synthetic", k=4)
    path = tmp_path / "calibration" / f"m{SUFFIX}"
    norm.save(path)
    back = load_normalisation("m", cache=tmp_path)
    assert back is not None and back.k == 4 and back.table.source == "synthetic"
    assert np.array_equal(back.cohort, norm.cohort)  # the fit already holds the float16 values a file stores
    assert np.array_equal(back.table.counts, norm.table.counts)
    assert back.scores(x[:5], x[5:9]) == pytest.approx(norm.scores(x[:5], x[5:9]))
    assert load_normalisation("other", cache=tmp_path) is None  # no file
    path.rename(tmp_path / "calibration" / f"other{SUFFIX}")  # a file under the wrong model's name
    assert load_normalisation("other", cache=tmp_path) is None
    (tmp_path / "calibration" / f"bad{SUFFIX}").write_bytes(b"not a table")
    assert load_normalisation("bad", cache=tmp_path) is None
    with pytest.raises(ValueError):
        Normalisation.load(tmp_path / "calibration" / f"bad{SUFFIX}")


def test_the_pretrained_model_ships_its_normalisation(tmp_path: Path) -> None:
    assert (SHIPPED_DIR / f"{PRETRAINED}{SUFFIX}").is_file()
    norm = load_normalisation(PRETRAINED, cache=tmp_path)
    assert norm is not None and norm.model_id == PRETRAINED and "LFW" in norm.table.source
    assert norm.cohort.shape == (norm.table.people, 128) and norm.k == 10


def _fresh(norm: Normalisation) -> Normalisation:
    """The same normalisation with nothing kept yet: scores as they were computed before subject spreads were
    kept."""
    return Normalisation(norm.cohort, norm.k, norm.table)


def _shipped(tmp_path: Path) -> Normalisation:
    norm = load_normalisation(PRETRAINED, cache=tmp_path)
    assert norm is not None
    return _fresh(norm)


@pytest.fixture
def computed(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The number of template rows each call of ``normalisation.spreads`` computes (what the cache did not have)."""
    from service.gallery import normalisation

    rows: list[int] = []
    real = normalisation.spreads

    def counting(vectors, cohort, k=normalisation.COHORT_K):
        rows.append(len(vectors))
        return real(vectors, cohort, k)

    monkeypatch.setattr(normalisation, "spreads", counting)
    return rows


def test_kept_spreads_are_not_computed_again(tmp_path: Path, rng, computed: list[int]) -> None:
    norm = _shipped(tmp_path)
    x, _ = people(rng, n_people=30)
    t = x[3:23]
    norm.subject_spreads(t)
    norm.subject_spreads(t)
    norm.subject_spreads(np.concatenate([x[30:35], t[::-1][:10]]))
    assert computed == [20, 5]  # then none again; then only the 5 new rows
    small = SpreadCache(norm.cohort, norm.k, size=4)
    computed.clear()
    small(t[:6])
    small(t[:1])  # dropped when the 5th and 6th came in: computed again
    small(t[5:6])
    assert computed == [6, 1]


def test_subject_spreads_are_kept_per_template_content(tmp_path: Path, rng) -> None:
    norm = _shipped(tmp_path)
    x, _ = people(rng, n_people=30)
    probes, t = x[:3], x[3:23]
    want = spreads(t, norm.cohort, norm.k)
    assert np.array_equal(norm.subject_spreads(t), want) and len(norm.subject_spreads) == 20
    assert np.array_equal(norm.subject_spreads(t), want) and len(norm.subject_spreads) == 20  # kept: none again
    mixed = np.concatenate([x[30:35], t[::-1][:10]])  # some new, some kept, in another order
    assert np.array_equal(norm.subject_spreads(mixed), spreads(mixed, norm.cohort, norm.k))
    assert np.array_equal(norm.probe_spreads(probes), spreads(probes, norm.cohort, norm.k))  # float64 cohort: same
    uncached = l2_matrix(probes, t) - 0.5 * (spreads(probes, norm.cohort, norm.k)[:, None] + want[None, :])
    assert np.array_equal(norm.scores(probes, t), uncached)
    # a subject's template changes (a face enrolled): its new spread, never the one kept for the old template
    changed = t.copy()
    changed[4] = unit(rng, 1)[0]
    got = norm.subject_spreads(changed)
    assert np.array_equal(got, spreads(changed, norm.cohort, norm.k)) and got[4] != want[4]
    assert np.array_equal(norm.subject_spreads(t), want)  # and back: the old template's spread again


def test_the_spread_cache_is_bounded(tmp_path: Path, rng) -> None:
    norm = _shipped(tmp_path)
    cache = SpreadCache(norm.cohort, norm.k, size=4)
    t = unit(rng, 6)
    want = spreads(t, norm.cohort, norm.k)
    assert np.array_equal(cache(t), want) and len(cache) == 4  # the first two dropped
    assert np.array_equal(cache(t[:1]), want[:1]) and len(cache) == 4  # computed again
    assert np.array_equal(cache(t[::-1]), want[::-1]) and len(cache) == 4


def _ranked(g: LocalGallery, probes: np.ndarray, norm: Normalisation) -> list[list[tuple[str, float, float]]]:
    ranked = rank_subjects(g, probes, model_id=MODEL, top_k=20, normalisation=norm)
    return [[(m.subject_id, m.distance, m.score) for m in matches] for matches in ranked]


def test_identify_scores_are_unchanged_by_kept_spreads_as_faces_come_and_go(tmp_path: Path, make_gallery, rng) -> None:
    """On a real gallery (SQLite + FAISS), with the shipped cohort: identify's scores with the spreads kept across
    calls equal those of a normalisation that keeps nothing, before and after a subject's template changes."""
    g = make_gallery()
    norm = _shipped(tmp_path)
    centres = unit(rng, 24)
    subjects = []
    for i, c in enumerate(centres):
        s = g.create_subject(name=f"p{i}")
        v = c + 0.3 * unit(rng, 2)
        g.add_faces(s.id, faces((v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)))
        subjects.append(s.id)
    probes = (centres[:3] + 0.2 * unit(rng, 3)).astype(np.float32)
    probes /= np.linalg.norm(probes, axis=1, keepdims=True)
    before = _ranked(g, probes, norm)
    assert len(before[0]) == 20 and before == _ranked(g, probes, _fresh(norm)) == _ranked(g, probes, norm)
    assert len(norm.subject_spreads) >= 20

    added = g.add_faces(subjects[0], faces(unit(rng, 1)))[0]  # subject 0's template changes
    after_enrol = _ranked(g, probes, norm)
    assert after_enrol == _ranked(g, probes, _fresh(norm))
    old = dict((sid, score) for sid, _, score in before[0])
    new = dict((sid, score) for sid, _, score in after_enrol[0])
    assert new[subjects[0]] != old[subjects[0]]
    g.delete_face(added.id)  # and back: the spread kept for the old template is right again
    assert _ranked(g, probes, norm) == before
    g.delete_face(g.list_faces(subjects[1])[0].id)
    assert _ranked(g, probes, norm) == _ranked(g, probes, _fresh(norm))
