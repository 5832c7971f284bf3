"""``facerec train`` rejects bad options with a clear message and exit code 2, before loading any model."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from service.cli import app


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--loss", "hinge"], "contrastive, triplet"),
        (["--freeze-up-to", "Conv2d_1a"], "Mixed_7a"),
    ],
)
def test_train_rejects_bad_options(tmp_path: Path, args: list[str], message: str) -> None:
    (tmp_path / "person").mkdir()
    result = CliRunner().invoke(app, ["train", str(tmp_path), *args], env={"COLUMNS": "300"})
    assert result.exit_code == 2, result.output
    assert message in result.output


def test_train_refuses_a_folder_with_too_few_people(tmp_path: Path, weights_path: Path) -> None:
    (tmp_path / "only").mkdir()
    result = CliRunner().invoke(app, ["train", str(tmp_path), "--work-dir", str(tmp_path / "w")])
    assert result.exit_code == 2, result.output
    assert "at least 2 people" in result.output
