"""``facerec gallery reconcile`` and ``rebuild-index`` on a real PostgreSQL and milvus-lite."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from service.cli import app
from service.gallery.milvus import MilvusOptions, open_milvus
from tests.milvus.helpers import MODEL, faces, unit


def test_reconcile_and_rebuild_commands(pg_url: str, milvus_lite_uri: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FACEREC_MILVUS_URI", milvus_lite_uri)
    monkeypatch.setenv("FACEREC_DATABASE_URL", pg_url)
    rng = np.random.default_rng(7)
    backend = open_milvus(pg_url, MilvusOptions(uri=milvus_lite_uri), sync_interval_s=0)
    g = backend.gallery
    s = g.create_subject(name="a")
    recs = g.add_faces(s.id, faces(unit(rng, 5)))
    g.engine.delete(MODEL, [recs[0].id])  # type: ignore[attr-defined]  # a lost vector
    g.engine.upsert(MODEL, [999_999], unit(rng, 1))  # type: ignore[attr-defined]  # an orphan
    backend.close()  # milvus-lite: one process at a time

    runner = CliRunner()
    out = runner.invoke(app, ["gallery", "reconcile", "--json"])
    assert out.exit_code == 1, out.output
    report = json.loads(out.output)
    assert report["models"][MODEL] == {"faces": 5, "vectors": 5, "missing": 1, "orphaned": 1, "stale_model": 0}
    out = runner.invoke(app, ["gallery", "reconcile", "--repair"])
    assert out.exit_code == 0, out.output
    assert "2 difference(s) repaired; 0 remaining" in out.output
    out = runner.invoke(app, ["gallery", "rebuild-index", "--yes", "--batch", "2"])
    assert out.exit_code == 0, out.output
    assert f"{MODEL}: 5 faces indexed" in out.output
    out = runner.invoke(app, ["gallery", "reconcile", "--json"])
    assert out.exit_code == 0 and json.loads(out.output)["differences"] == 0


def test_bootstrap_opens_the_milvus_backend(pg_url: str, milvus_lite_uri: str, tmp_path: Path) -> None:
    """``FACEREC_VECTOR_BACKEND=milvus``: the service's bootstrap opens PostgreSQL (gallery, keys, audit) with the
    Milvus engine; without ``FACEREC_MILVUS_URI`` it refuses with a clear message."""
    from service.bootstrap import open_backend
    from service.config import Settings
    from service.gallery.milvus import MilvusGallery
    from service.gallery.postgres import DatabaseConfigError

    settings = Settings(data=tmp_path / "d", database_url=pg_url, vector_backend="milvus", milvus_uri=milvus_lite_uri)
    backend = open_backend(settings)
    try:
        assert isinstance(backend.gallery, MilvusGallery)
        key, token = backend.keys.create(scope="admin", name="ops")
        assert backend.keys.authenticate(token) == key
        s = backend.gallery.create_subject(name="a")
        [rec] = backend.gallery.add_faces(s.id, faces(unit(np.random.default_rng(1), 1)))
        assert backend.gallery.pending() == 0 and rec.id
    finally:
        backend.close()
    with pytest.raises(DatabaseConfigError, match="FACEREC_MILVUS_URI"):
        open_backend(Settings(data=tmp_path / "d", database_url=pg_url, vector_backend="milvus"))
