"""service/recognition/ with fake analyzers and a real gallery: concurrent enrolment of one image,
verify against a subject, and identify's threshold policy."""

from __future__ import annotations

import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from tests.service.fakes import EmbeddingAnalyzer, FakeFace, unit


def test_concurrent_enrolment_of_one_image_stores_it_once(tmp_path: Path) -> None:
    from service import recognition
    from service.gallery import open_gallery

    gallery = open_gallery(tmp_path / "g")
    try:
        sid = gallery.create_subject(name="a").id
        barrier = threading.Barrier(2, timeout=10)  # both analyse before either stores
        analyzer = EmbeddingAnalyzer(on_analyse=barrier.wait)
        results: list[Any] = []

        def enrol() -> None:
            results.append(
                recognition.enroll(analyzer=analyzer, gallery=gallery, subject_id=sid, images=[b"\x03same"])  # type: ignore[arg-type]
            )

        threads = [threading.Thread(target=enrol) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(20)
        assert len(results) == 2 and analyzer.calls == 2
        assert len(gallery.list_faces(sid)) == 1
        stored = [r for r in results if r.faces]
        lost = [r for r in results if not r.faces]
        assert len(stored) == 1 and len(lost) == 1
        (rejection,) = lost[0].rejected
        assert rejection.code == "duplicate" and rejection.face_id == stored[0].faces[0].id
    finally:
        gallery.close()


def test_verify_subject_checks_for_faces_first_and_attributes_distances(tmp_path: Path) -> None:
    from embeddings.errors import NoFace
    from service import recognition
    from service.gallery import NewFace, open_gallery

    gallery = open_gallery(tmp_path / "g")
    try:
        empty = gallery.create_subject(name="empty").id

        def never() -> None:
            raise AssertionError("the image was analysed for a subject without faces")

        with pytest.raises(NoFace):
            recognition.verify_subject(
                analyzer=EmbeddingAnalyzer(never),  # type: ignore[arg-type]
                gallery=gallery,
                image=b"\x00",
                subject_id=empty,
                threshold=1.0,
            )
        sid = gallery.create_subject(name="s").id
        recs = gallery.add_faces(sid, [NewFace(embedding=unit(i), model_id="fake") for i in (0, 1, 2)])
        result = recognition.verify_subject(
            analyzer=EmbeddingAnalyzer(),  # type: ignore[arg-type]
            gallery=gallery,
            image=b"\x00",
            subject_id=sid,
            threshold=1.5,
        )
        assert result.distances is not None
        assert [d["face_id"] for d in result.distances] == [r.id for r in recs]
        assert [round(d["distance"], 4) for d in result.distances] == [0.0, 1.4142, 1.4142]
        # the person-level rule: the distance to the template (e0 + e1 + e2) / sqrt(3), cosine 1/sqrt(3)
        assert result.distance == pytest.approx((2 - 2 / 3**0.5) ** 0.5, abs=1e-4) and result.match is True
    finally:
        gallery.close()


def _calibration() -> Any:
    """Tables of the fake model fitted on synthetic people (the shipped ones are the pretrained model's); their
    impostors lie near L2 1.41, so a 1.4 fixed threshold is what the FIR bound tightens."""
    from service.gallery.calibration import fit_calibration

    rng = np.random.default_rng(0)
    centres = rng.standard_normal((400, 128))
    x = np.repeat(centres, 3, axis=0) + 0.6 * rng.standard_normal((1200, 128))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return fit_calibration(x.astype(np.float32), np.repeat(np.arange(400), 3), model_id="fake", source="synthetic")


def test_identify_threshold_policy() -> None:
    from service.recognition import identify_threshold

    cal = _calibration()

    def choose(**kw: Any) -> Any:
        args: dict[str, Any] = {"requested": None, "fixed": 1.4, "max_fir": 0.01, "calibration": cal}
        return identify_threshold(**{**args, "subjects": 70, "faces": 200, **kw})

    explicit = choose(requested=1.3)
    assert (explicit.threshold, explicit.source) == (1.3, "request")
    off = choose(max_fir=None)
    assert (off.threshold, off.source) == (1.4, "fixed")
    assert choose(max_fir=0.0).source == "fixed"
    assert choose(subjects=0, faces=0).source == "fixed"
    assert (choose(calibration=None).threshold, choose(calibration=None).source) == (1.4, "uncalibrated")
    loose = choose(fixed=0.5, subjects=1, faces=1)
    assert cal.threshold_for_fir(0.01, 1) > 0.5 and (loose.threshold, loose.source) == (0.5, "fixed")
    big = choose()
    assert big.source == "max_fir" and big.threshold == pytest.approx(cal.threshold_for_fir(0.01, 70))  # subjects
    assert cal.false_identification_rate(big.threshold, 70) == pytest.approx(0.01, abs=1e-3)
    bigger = choose(subjects=1000, faces=3000)
    assert bigger.threshold < big.threshold  # tightens as the gallery grows


def test_identify_rescores_subjects_and_reports_the_threshold_it_used(monkeypatch: pytest.MonkeyPatch) -> None:
    from service import recognition
    from service.gallery import Candidate

    cal = _calibration()
    probe = unit(0)
    near_one = np.stack([unit(0) * 0.8 + unit(1) * 0.6])  # one face at cosine 0.8
    spread = np.stack([unit(0) * 0.7 + unit(2) * 0.71, unit(0) * 0.7 - unit(2) * 0.71])  # template near the probe

    class Gallery:
        def subject_count(self) -> int:
            return 10

        def face_count(self, model_id: str) -> int:
            return {"fake": 30, "other": 5}.get(model_id, 0)

        def search(self, probes: Any, *, model_id: str, top_k: int) -> list[list[Candidate]]:
            assert top_k >= recognition.RESCORE_CANDIDATES
            d1 = float(np.linalg.norm(probe - near_one[0]))
            d2 = float(np.linalg.norm(probe - spread[0] / np.linalg.norm(spread[0])))
            cands = [Candidate("s1", "one photo", 7, d1, 1 - d1**2 / 2), Candidate("s2", "two", 8, d2, 1 - d2**2 / 2)]
            return [cands for _ in probes]

        def face_embeddings(self, subject_id: str, *, model_id: str) -> Any:
            raw = near_one if subject_id == "s1" else spread
            return (raw / np.linalg.norm(raw, axis=1, keepdims=True)).astype(np.float32)

        def subjects_embeddings(self, subject_ids: Any, *, model_id: str) -> dict[str, Any]:
            return {s: self.face_embeddings(s, model_id=model_id) for s in subject_ids}

    class Analyzer(EmbeddingAnalyzer):
        threshold = 1.075

        def analyze(self, image: bytes) -> list[FakeFace]:
            return [FakeFace(probe)]

    def run(**kw: Any) -> recognition.IdentifyResult:
        return recognition.identify(analyzer=Analyzer(), gallery=Gallery(), image=b"x", top_k=3, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(recognition.openset, "load_calibration", lambda model_id: cal if model_id == "fake" else None)
    fixed = run(threshold=None, fixed_threshold=1.4, max_fir=None)
    ranked = fixed.faces[0].candidates
    # by nearest face s1 (0.632) beats s2 (0.774); by template s2's two faces average to the probe's direction
    assert [c.subject_id for c in ranked] == ["s2", "s1"]
    assert ranked[0].distance < ranked[0].face_distance and ranked[1].distance == pytest.approx(ranked[1].face_distance)
    assert fixed.threshold_source == "fixed" and fixed.faces[0].match is not None
    assert fixed.faces[0].match.subject_id == "s2"
    adaptive = run(threshold=None, fixed_threshold=1.4, max_fir=0.01)
    assert adaptive.threshold_source == "max_fir" and adaptive.gallery_faces == 30 and adaptive.gallery_subjects == 10
    assert adaptive.threshold == pytest.approx(cal.threshold_for_fir(0.01, 10))
    assert adaptive.estimated_fir == pytest.approx(0.01, abs=1e-3)
    explicit = run(threshold=1.0, fixed_threshold=1.4, max_fir=0.01)
    assert (explicit.threshold, explicit.threshold_source) == (1.0, "request")
    monkeypatch.setattr(recognition.openset, "load_calibration", lambda model_id: None)  # a model without tables
    bare = run(threshold=None, fixed_threshold=1.4, max_fir=0.01)
    assert (bare.threshold, bare.threshold_source, bare.estimated_fir) == (1.4, "uncalibrated", None)


def _normalisation() -> Any:
    """A cohort normalisation of the fake model fitted on the same kind of synthetic people."""
    from service.gallery.calibration import sample_people
    from service.gallery.normalisation import fit_normalisation

    rng = np.random.default_rng(1)
    centres = rng.standard_normal((100, 128))
    x = np.repeat(centres, 3, axis=0) + 0.6 * rng.standard_normal((300, 128))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    labels = np.repeat(np.arange(100), 3)
    return fit_normalisation(
        sample_people(x.astype(np.float32), labels, probes=300), model_id="fake", source="synthetic"
    )


def test_a_normalised_threshold_decides_on_the_score_and_keeps_the_fixed_distance(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from service import recognition
    from service.gallery import Candidate
    from service.gallery.normalisation import spreads

    norm = _normalisation()
    choice = recognition.identify_threshold(
        requested=None, fixed=1.4, max_fir=0.01, calibration=_calibration(), subjects=10, faces=30, normalisation=norm
    )
    assert (choice.source, choice.scale) == ("max_fir", "normalised")
    assert choice.threshold == pytest.approx(norm.table.threshold_for_fir(0.01, 10)) and choice.threshold < 0
    asked = recognition.identify_threshold(
        requested=0.9, fixed=1.4, max_fir=0.01, calibration=None, subjects=10, faces=30, normalisation=norm
    )
    assert (asked.threshold, asked.source, asked.scale) == (0.9, "request", "distance")

    probe = unit(0)
    mine = np.stack([unit(0) * 0.9 + unit(1) * 0.436])  # cosine 0.9 with the probe: distance ~0.447
    other = np.stack([unit(0) * 0.3 + unit(2) * 0.954])  # cosine 0.3: distance ~1.18

    subjects = {"a": mine / np.linalg.norm(mine), "b": other / np.linalg.norm(other)}
    cands = [Candidate("b", "other", 2, 1.18, 0.3), Candidate("a", "mine", 1, 0.45, 0.9)]
    gallery = SimpleNamespace(
        subject_count=lambda: 2, face_count=lambda model_id: 2, search=lambda probes, **kw: [cands for _ in probes],
        subjects_embeddings=lambda sids, **kw: {s: subjects[s].astype(np.float32) for s in sids},
    )  # fmt: skip

    class Analyzer(EmbeddingAnalyzer):
        threshold = 1.075

        def analyze(self, image: bytes) -> list[FakeFace]:
            return [FakeFace(probe)]

    monkeypatch.setattr(recognition.openset, "load_calibration", lambda model_id: None)
    monkeypatch.setattr(recognition.openset, "load_normalisation", lambda model_id: norm)
    result = recognition.identify(
        analyzer=Analyzer(),  # type: ignore[arg-type]
        gallery=gallery,
        image=b"x",
        top_k=2,
        threshold=None,
        max_fir=0.01,
    )
    assert (result.threshold_source, result.threshold_scale) == ("max_fir", "normalised")
    assert result.estimated_fir == pytest.approx(0.01, abs=1e-3)
    first, second = result.faces[0].candidates
    assert first.subject_id == "a" and first.score < second.score
    tm = subjects["a"].astype(np.float32)
    d = float(np.linalg.norm(probe - tm[0]))
    assert first.distance == pytest.approx(d, abs=1e-6)  # distance stays the raw L2 distance
    want = d - 0.5 * (spreads(probe[None], norm.cohort)[0] + spreads(tm, norm.cohort)[0])
    assert first.score == pytest.approx(want, abs=1e-6)
    assert (result.faces[0].match is not None) == (first.score <= result.threshold)
    # a score within the threshold is still refused when the raw distance exceeds the fixed threshold
    policy = result.policy
    assert policy.accepts(type(first)("a", "mine", 1, 0.5, 0.875, 0.5, result.threshold - 0.1))
    assert not policy.accepts(type(first)("a", "mine", 1, 1.2, 0.28, 1.2, result.threshold - 0.1))
    assert not policy.accepts(type(first)("a", "mine", 1, 0.5, 0.875, 0.5, result.threshold + 0.1))
    explicit = recognition.identify(analyzer=Analyzer(), gallery=gallery, image=b"x", top_k=2, threshold=1.0)  # type: ignore[arg-type]
    assert explicit.threshold_scale == "distance" and [c.score for c in explicit.faces[0].candidates] == [
        c.distance for c in explicit.faces[0].candidates
    ]
