"""``facerec calibrate`` fails in one line: a bad ``--seed`` before any work, a calibration dir that cannot be
written with exit 1 and the model's existing tables left as they were. Real weights on a few photos."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from embeddings import weights
from service.cli import app
from tests.service.helpers import ENROLLED, images


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "cache"
    root.mkdir()
    for name in ("weights", "datasets"):
        (root / name).symlink_to(weights.cache_dir() / name, target_is_directory=True)
    monkeypatch.setenv("FACEREC_CACHE", str(root))
    return root


def test_a_negative_seed_is_refused_before_any_work(tmp_path: Path, cache: Path) -> None:
    result = CliRunner().invoke(app, ["calibrate", "--root", str(tmp_path), "--seed", "-1"], env={"COLUMNS": "300"})
    assert result.exit_code == 2 and "--seed" in result.output, result.output


@pytest.mark.slow
def test_an_unwritable_calibration_dir_is_one_line_and_exit_1(tmp_path: Path, cache: Path, dataset: Path) -> None:
    root = tmp_path / "people"
    for person in ENROLLED[:2]:
        (root / person).mkdir(parents=True)
        for src in images(dataset, "val", person)[:3]:
            shutil.copyfile(src, root / person / src.name)
    (cache / "calibration").write_text("")  # a file where the tables' dir goes (as read-only or full disks fail)
    result = CliRunner().invoke(app, ["calibrate", "--root", str(root)], env={"COLUMNS": "300"})
    assert result.exit_code == 1, (result.output, result.exception)
    assert "error: cannot write the calibration tables:" in result.output
    assert (cache / "calibration").read_text() == ""
