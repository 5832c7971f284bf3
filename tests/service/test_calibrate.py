"""Calibration per model: a fine-tuned model has no tables (identify says ``uncalibrated``, never borrowing the
pretrained model's) until ``facerec calibrate`` fits its own. Real weights, real MTCNN, real gallery."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from embeddings import FaceAnalyzer, weights
from embeddings.models import resolve_model
from embeddings.training.model_dir import CARD_FILE, WEIGHTS_FILE
from service import recognition
from service.cli import app as cli_app
from service.config import Settings
from service.gallery import open_gallery
from service.gallery.calibration import SHIPPED_DIR, load_calibration, tables_path
from service.gallery.normalisation import load_normalisation
from tests.service.helpers import ENROLLED, UNKNOWN, images

pytestmark = pytest.mark.slow

MODEL = "ft-copy-test-20261205000000"


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory, weights_path: Path, dataset: Path) -> Iterator[Path]:
    """A cache dir with a "fine-tuned" model: a copy of the pretrained weights and a card."""
    root = tmp_path_factory.mktemp("cache")
    for name in ("weights", "datasets"):
        (root / name).symlink_to(weights.cache_dir() / name, target_is_directory=True)
    model_dir = root / "models" / MODEL
    model_dir.mkdir(parents=True)
    shutil.copyfile(weights_path, model_dir / WEIGHTS_FILE)
    card = {
        "model_id": MODEL,
        "base_model_id": weights.MODEL_ID,
        "created": "2026-12-05T00:00:00Z",
        "threshold": 1.075,
        "data": {"note": "test fixture: a copy of the pretrained weights"},
        "params": {},
        "validation": {"before": {}, "after": {}},
        "train_seconds": 0.0,
    }
    (model_dir / CARD_FILE).write_text(json.dumps(card))
    mp = pytest.MonkeyPatch()
    mp.setenv("FACEREC_CACHE", str(root))
    yield root
    mp.undo()


def test_a_fine_tuned_model_is_uncalibrated_until_calibrated(cache: Path, dataset: Path, tmp_path: Path) -> None:
    info = resolve_model(MODEL)
    analyzer = FaceAnalyzer(Settings().analyzer_config(), weights_path=info.weights_path, model_id=MODEL)
    assert tables_path(MODEL) is None and load_calibration(MODEL) is None
    assert (SHIPPED_DIR / f"{weights.MODEL_ID}.npz").is_file()  # the pretrained model's exist, and are not used
    probe = images(dataset, "val", ENROLLED[0])[0].read_bytes()
    stranger = images(dataset, "val", UNKNOWN)[0].read_bytes()
    with open_gallery(tmp_path / "data") as g:
        for person in ENROLLED:
            sid = g.create_subject(name=person).id
            photos = [p.read_bytes() for p in images(dataset, "train", person)[:3]]
            assert recognition.enroll(analyzer=analyzer, gallery=g, subject_id=sid, images=photos).faces

        def identify(image: bytes) -> recognition.IdentifyResult:
            return recognition.identify(
                analyzer=analyzer, gallery=g, image=image, threshold=None, top_k=3, max_fir=0.01
            )

        before = identify(probe)
        assert before.threshold_source == "uncalibrated" and before.estimated_fir is None
        assert before.threshold == analyzer.threshold  # the model card's fixed threshold
        assert before.faces[0].match is not None and before.faces[0].match.subject_name == ENROLLED[0]

        result = CliRunner().invoke(cli_app, ["calibrate", "--model", MODEL, "--root", str(dataset / "train")])
        assert result.exit_code == 0, result.output
        summary = json.loads(result.stdout.strip().splitlines()[-1])
        assert summary["model_id"] == MODEL and summary["people"] == 5 and summary["images"] >= 80
        assert Path(summary["tables"]) == cache / "calibration" / f"{MODEL}.npz"
        # 5 people are too few for a cohort: no normalisation, identify decides on the L2 tables
        assert summary["normalisation"] is None and load_normalisation(MODEL) is None
        own = load_calibration(MODEL)
        assert own is not None and own.model_id == MODEL and own.people == 5 and "facerec calibrate" in own.source

        after = identify(probe)
        assert after.threshold_source in {"max_fir", "fixed"} and after.estimated_fir is not None
        assert after.threshold_scale == "distance"
        assert after.estimated_fir == pytest.approx(
            own.false_identification_rate(after.threshold, after.gallery_subjects), rel=1e-6
        )
        assert after.faces[0].match is not None and after.faces[0].match.subject_name == ENROLLED[0]
        assert all(f.match is None for f in identify(stranger).faces)
    # the pretrained model still reads its shipped tables
    shipped = load_calibration(weights.MODEL_ID)
    assert shipped is not None and shipped.model_id == weights.MODEL_ID and "LFW" in shipped.source


def test_calibrate_refuses_a_folder_with_one_person(cache: Path, dataset: Path, tmp_path: Path) -> None:
    one = tmp_path / "one"
    shutil.copytree(dataset / "train" / ENROLLED[0], one / ENROLLED[0])
    (one / ENROLLED[0] / "folder.jpg").mkdir()  # named like an image: skipped, not a traceback
    result = CliRunner().invoke(cli_app, ["calibrate", "--model", MODEL, "--root", str(one)])
    assert result.exit_code == 1 and "at least 2 people" in result.output, result.output
    result = CliRunner().invoke(cli_app, ["calibrate", "--model", "no-such-model", "--root", str(one)])
    assert result.exit_code == 1 and "error: " in result.output and "Traceback" not in result.output, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
