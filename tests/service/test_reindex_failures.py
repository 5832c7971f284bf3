"""A re-index that fails: stopped by Ctrl-C, the batches committed before it stay staged, the audit log records
them (it recorded nothing: the count was only known once the whole run returned), and the next run embeds the
rest; a model whose weights file is damaged is refused in one line, the gallery unchanged."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from service.cli import app
from service.config import Settings
from service.gallery import NewFace, open_gallery
from service.reindex import reindex
from tests.gallery.contract.helpers import MODEL, crop, unit

NEW = "ft-interrupted-20261207000000"


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """A data dir with 10 faces (random embeddings and crops) of the pretrained model, and a model NEW in the
    cache (its weights are never loaded: the encoder is the test's)."""
    model_dir = tmp_path / "cache" / "models" / NEW
    model_dir.mkdir(parents=True)
    (model_dir / "model.weights.h5").write_bytes(b"")
    card = {"model_id": NEW, "base_model_id": MODEL, "created": "2026-12-07T00:00:00Z", "threshold": 1.0}
    card |= {"data": {}, "params": {}, "validation": {"before": {}, "after": {}}, "train_seconds": 0.0}
    (model_dir / "card.json").write_text(json.dumps(card))
    monkeypatch.setenv("FACEREC_CACHE", str(tmp_path / "cache"))
    rng = np.random.default_rng(0)
    with open_gallery(tmp_path / "data") as g:
        sid = g.create_subject(name="p").id
        g.add_faces(sid, [NewFace(v, MODEL, crop=crop(rng)) for v in unit(rng, 10)])
    return Settings(data=tmp_path / "data")


def _audit(settings: Settings, action: str) -> list[dict[str, Any]]:
    lines = (settings.data / "audit.log").read_text().splitlines()
    return [entry for entry in map(json.loads, lines) if entry["action"] == action]


def test_a_reindex_stopped_by_ctrl_c_is_audited_and_resumes(settings: Settings) -> None:
    calls = 0

    def interrupted(s: Settings, model_id: str) -> Any:
        def encode(crops: np.ndarray) -> np.ndarray:
            nonlocal calls
            calls += 1
            if calls == 3:
                raise KeyboardInterrupt
            return unit(np.random.default_rng(calls), len(crops))

        return encode

    with pytest.raises(KeyboardInterrupt):
        reindex(settings, NEW, batch_size=3, encoder_factory=interrupted)
    assert [e["count"] for e in _audit(settings, "model.reindex")] == [6]  # two batches of 3 were committed

    report = reindex(
        settings, NEW, batch_size=3, encoder_factory=lambda s, m: lambda c: unit(np.random.default_rng(9), len(c))
    )
    assert (report.state, report.embedded, report.switched) == ("switched", 4, 10)
    assert [e["count"] for e in _audit(settings, "model.reindex")] == [6, 4]


@pytest.mark.slow
def test_a_model_with_damaged_weights_is_refused_in_one_line(settings: Settings) -> None:
    """The model directory passes the registry (card valid, weights file present) but the weights are not HDF5:
    it was an h5py OSError traceback."""
    result = CliRunner().invoke(app, ["reindex", "--model", NEW, "--data", str(settings.data)])
    assert result.exit_code == 1, (result.output, result.exception)
    assert f"error: weights_unavailable: cannot load the weights {settings.data.parent}" in result.output
    with open_gallery(settings.data) as g:
        assert g.reindex_counts(NEW) == {"faces": 10, "todo": 10, "staged": 0, "without_crop": 0}


def test_a_data_dir_that_cannot_be_written_is_one_line(settings: Settings) -> None:
    """The re-index lock cannot be created (a directory in its place here; a data dir owned by the server's user,
    or a read-only one, fail the same way): it was an OSError traceback."""
    (settings.data / "REINDEX.lock").mkdir()
    result = CliRunner().invoke(app, ["reindex", "--model", NEW, "--data", str(settings.data)])
    assert result.exit_code == 1, (result.output, result.exception)
    assert "error: [Errno 21] Is a directory" in result.output
