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
        (["--margin", "nan"], "--margin"),  # nan, inf and missing files passed and failed after detection
        (["--lr", "inf"], "--lr"),
        (["--distill", "inf"], "--distill"),
        (["--weights", "no-such-weights.h5"], "does not exist"),
        (["--seed", "-1"], "--seed"),  # failed after detection with "expected non-negative integer"
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


def test_train_refuses_a_work_dir_that_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "person").mkdir()
    (tmp_path / "work").write_text("")
    args = ["train", str(tmp_path), "--work-dir", str(tmp_path / "work")]
    result = CliRunner().invoke(app, args, env={"COLUMNS": "300"})
    assert result.exit_code == 2 and "is a file" in result.output, result.output


def test_train_reports_an_unwritable_work_dir_in_one_line(tmp_path: Path, weights_path: Path) -> None:
    """An OSError (a work dir under a file here; read-only or full disks alike) is one line and exit 1."""
    for person in ("a", "b"):
        (tmp_path / "people" / person).mkdir(parents=True)
    (tmp_path / "file").write_text("")
    args = ["train", str(tmp_path / "people"), "--work-dir", str(tmp_path / "file" / "w")]
    result = CliRunner().invoke(app, args, env={"COLUMNS": "300"})
    assert result.exit_code == 1 and "error: [Errno 20] Not a directory" in result.output, result.output


def test_train_counts_a_non_image_as_a_miss_and_needs_two_training_people(
    tmp_path: Path, weights_path: Path, celebrity_root: Path
) -> None:
    """A text file named .jpg is a miss (it stopped training with an InvalidImage traceback); two people are too
    few (one is held out for validation), said before the activation caches are computed."""
    import shutil

    from tests.conftest import image_files

    for person in ("ben_afflek", "madonna"):
        (tmp_path / "people" / person).mkdir(parents=True)
        for src in image_files(celebrity_root / "train" / person)[:2]:
            shutil.copyfile(src, tmp_path / "people" / person / src.name)
        (tmp_path / "people" / person / "notes.jpg").write_text("not an image")
    args = ["train", str(tmp_path / "people"), "--work-dir", str(tmp_path / "w")]
    result = CliRunner().invoke(app, args, env={"COLUMNS": "300"})
    assert result.exit_code == 2, (result.output, result.exception)
    assert "leaving 1 to train on; training needs at least 2" in result.output
    assert not list((tmp_path / "w").glob("acts-*"))  # refused before caching activations


@pytest.mark.slow
def test_train_cli_gate_eval_root_and_models_list(
    tmp_path: Path, weights_path: Path, celebrity_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real 2-step run: the gate finds no better model (exit 3, "no better model found" with the figures), the
    model kept with --keep-rejected is marked rejected in its card, with before/after figures on the gate people
    and on --eval-root; `facerec models list` shows it as rejected; FACEREC_MODEL=<it> is refused."""
    import json

    from embeddings import weights

    cache = tmp_path / "cache"
    cache.mkdir()
    for name in ("weights", "datasets"):
        (cache / name).symlink_to(weights.cache_dir() / name, target_is_directory=True)
    monkeypatch.setenv("FACEREC_CACHE", str(cache))
    args = ["train", str(celebrity_root / "train"), "--name", "cli", "--max-steps", "2", "--eval-every", "1"]
    args += ["--variants", "2", "--work-dir", str(tmp_path / "w"), "--eval-root", str(celebrity_root / "val")]
    result = CliRunner().invoke(app, [*args, "--keep-rejected"], env={"COLUMNS": "300"})
    assert result.exit_code == 3, result.output
    assert "no better model found" in result.output and "kept as rejected" in result.output
    assert "TPIR@FPIR1%" in result.output and "--eval-root" in result.output
    line = json.loads([x for x in result.output.splitlines() if x.startswith("{")][-1])
    assert line["status"] == "rejected" and line["model_id"].startswith("ft-cli-")
    card = json.loads((Path(line["model_dir"]) / "card.json").read_text())
    assert card["status"] == "rejected" and card["gate"]["accepted"] is False
    ev = card["eval_root"]
    assert ev["before"]["people"] == 5 and ev["root"] == str(celebrity_root / "val")
    for when in ("before", "after"):
        assert 0.0 <= ev[when]["tar_at_far_1e-3"] <= 1.0 and 0.0 <= ev[when]["tpir_at_fpir_1e-2"] <= 1.0
        assert 0.0 <= card["validation"][when]["tpir_at_fpir_1e-2"] <= 1.0
    listed = CliRunner().invoke(app, ["models", "list"], env={"COLUMNS": "300"})
    assert listed.exit_code == 0 and "rejected (not" in listed.output, listed.output
    as_json = json.loads(CliRunner().invoke(app, ["models", "list", "--json"]).output)
    row = next(m for m in as_json["models"] if m["model_id"] == line["model_id"])
    assert row["selectable"] is False and row["validation"]["after"]["tar_at_far_1e-3"] is not None

    from embeddings.models import RejectedModel
    from service.config import Settings

    with pytest.raises(RejectedModel, match="rejected by the training gate"):
        _ = Settings(model=line["model_id"]).match_threshold
    serve = CliRunner().invoke(
        app, ["serve", "--data", str(tmp_path / "data")], env={"FACEREC_MODEL": line["model_id"]}
    )
    assert serve.exit_code == 2 and "rejected by the training gate" in serve.output, serve.output
