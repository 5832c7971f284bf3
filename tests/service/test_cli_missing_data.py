"""Commands on what a data dir holds (listing, showing, tailing, exporting, identifying, watching, deleting,
revoking, re-clustering) refuse a data dir that does not exist in one line and create nothing; commands that
write (``keys create``...) create it, and ``verify`` needs none."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from service.cli import app
from tests.service.fakes import FakeFace


@pytest.fixture(autouse=True)
def no_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """A developer's FACEREC_DATABASE_URL (stores in a database: no data dir needed) must not leak in."""
    for name in [n for n in os.environ if n.startswith("FACEREC_")]:
        monkeypatch.delenv(name)


def test_reading_commands_refuse_a_missing_data_dir_and_create_nothing(tmp_path: Path) -> None:
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(b"not looked at")
    video = tmp_path / "clip.mp4"
    video.write_bytes(b"not looked at")
    commands: list[tuple[list[str], dict[str, str]]] = [
        (["subjects", "list"], {}),
        (["subjects", "show", "someone"], {}),
        (["subjects", "delete", "someone", "--yes"], {}),
        (["keys", "list"], {}),
        (["keys", "revoke", "somekey"], {}),
        (["audit", "tail"], {}),
        (["events", "export"], {}),
        (["identify", str(photo)], {}),
        (["watch", str(video)], {}),
        (["photos", "recluster"], {"FACEREC_PHOTO_LIBRARY": "true"}),
    ]
    data = tmp_path / "typo" / "data"
    says = f"error: storage_unavailable: no data dir at {data} (choose one with --data or FACEREC_DATA)\n"
    for command, env in commands:
        result = CliRunner().invoke(app, [*command, "--data", str(data)], env=env)
        assert result.exit_code == 1 and result.output == says, (command, result.output)
        assert not (tmp_path / "typo").exists(), command


def test_the_default_data_dir_is_named_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["subjects", "list"])
    assert result.exit_code == 1 and f"no data dir at {tmp_path / 'data'} " in result.output, result.output
    assert not (tmp_path / "data").exists()


def test_a_data_dir_that_is_not_a_directory_is_still_said_so(tmp_path: Path) -> None:
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    for data, says in ((a_file, "is not a directory"), (a_file / "sub", "Not a directory")):
        result = CliRunner().invoke(app, ["keys", "list", "--data", str(data)])
        assert result.exit_code == 1 and "error: storage_unavailable: " in result.output, result.output
        assert says in result.output and "no data dir" not in result.output


def test_writing_commands_still_create_the_data_dir(tmp_path: Path) -> None:
    data = tmp_path / "new" / "data"
    result = CliRunner().invoke(app, ["keys", "create", "--scope", "admin", "--data", str(data)])
    assert result.exit_code == 0, result.output
    assert (data / "keys.db").is_file()
    listed = CliRunner().invoke(app, ["keys", "list", "--data", str(data), "--json"])
    assert listed.exit_code == 0 and '"scope": "admin"' in listed.output


class OneFaceAnalyzer:
    """Every image holds the same one face."""

    model_id = "fake"

    def single_face(self, image: bytes, **options: Any) -> FakeFace:
        return FakeFace(np.eye(128, dtype=np.float32)[0])


def test_verify_opens_no_store_and_creates_no_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("service.bootstrap.default_analyzer", lambda settings: OneFaceAnalyzer())
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(b"not looked at")
    data = tmp_path / "data"
    args = ["verify", str(photo), str(photo), "--threshold", "1.0", "--json", "--data", str(data)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0 and json.loads(result.stdout)["match"] is True, result.output
    assert not data.exists()
