"""service/recognition.py with fake analyzers and a real gallery: concurrent enrolment of one image,
verify against a subject, and identify's threshold policy."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

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
        assert result.distance == pytest.approx(2**0.5, abs=1e-4) and result.match is True
    finally:
        gallery.close()


def test_identify_threshold_policy() -> None:
    from service.gallery.calibration import false_identification_rate, threshold_for_fir
    from service.recognition import identify_threshold

    explicit = identify_threshold(requested=1.3, fixed=1.075, max_fir=0.01, gallery_size=70)
    assert (explicit.threshold, explicit.source) == (1.3, "request")
    off = identify_threshold(requested=None, fixed=1.075, max_fir=None, gallery_size=70)
    assert (off.threshold, off.source) == (1.075, "fixed")
    assert identify_threshold(requested=None, fixed=1.075, max_fir=0.0, gallery_size=70).source == "fixed"
    assert identify_threshold(requested=None, fixed=1.075, max_fir=0.01, gallery_size=0).source == "fixed"
    small = identify_threshold(requested=None, fixed=1.075, max_fir=0.01, gallery_size=1)
    assert threshold_for_fir(0.01, 1) > 1.075 and (small.threshold, small.source) == (1.075, "fixed")
    big = identify_threshold(requested=None, fixed=1.075, max_fir=0.01, gallery_size=70)
    assert big.source == "max_fir" and big.threshold == pytest.approx(threshold_for_fir(0.01, 70))
    assert 0.803 < big.threshold < 1.075  # the 5-celebrity acceptance margins: genuine <= 0.803, strangers >= 1.135
    assert false_identification_rate(big.threshold, 70) == pytest.approx(0.01, abs=1e-3)
    bigger = identify_threshold(requested=None, fixed=1.075, max_fir=0.01, gallery_size=1000)
    assert bigger.threshold < big.threshold  # tightens as the gallery grows


def test_identify_reports_the_threshold_it_used() -> None:
    from service import recognition
    from service.gallery import Candidate

    class Gallery:
        def subject_count(self) -> int:
            return 10

        def face_count(self, model_id: str) -> int:
            return {"fake": 70, "other": 5}.get(model_id, 0)

        def search(self, probes: Any, *, model_id: str, top_k: int) -> list[list[Candidate]]:
            return [[Candidate("s1", "someone", 7, 0.95, 1 - 0.95**2 / 2)] for _ in probes]

    class Analyzer(EmbeddingAnalyzer):
        threshold = 1.075

        def analyze(self, image: bytes) -> list[FakeFace]:
            return [FakeFace(unit(0))]

    def run(**kw: Any) -> recognition.IdentifyResult:
        return recognition.identify(analyzer=Analyzer(), gallery=Gallery(), image=b"x", top_k=3, **kw)  # type: ignore[arg-type]

    adaptive = run(threshold=None, fixed_threshold=1.075, max_fir=0.01)
    assert adaptive.threshold_source == "max_fir" and adaptive.gallery_faces == 70
    assert adaptive.threshold < 0.95 and adaptive.faces[0].match is None
    assert adaptive.estimated_fir == pytest.approx(0.01, abs=1e-3)
    fixed = run(threshold=None, fixed_threshold=1.075, max_fir=None)
    assert fixed.threshold_source == "fixed" and fixed.threshold == 1.075 and fixed.faces[0].match is not None
    assert fixed.estimated_fir is not None and fixed.estimated_fir > 0.1
    explicit = run(threshold=1.0, fixed_threshold=1.075, max_fir=0.01)
    assert (explicit.threshold, explicit.threshold_source) == (1.0, "request")
    assert explicit.faces[0].match is not None
