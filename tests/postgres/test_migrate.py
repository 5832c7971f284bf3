"""``facerec gallery migrate``: an embedded gallery (real SQLite + FAISS data dir) copied into a real PostgreSQL,
resumed after a stop, checked by counts and searches."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import psycopg
import pytest
from typer.testing import CliRunner

from service.audit import AuditLog
from service.cli import app
from service.gallery import NewFace, open_gallery
from service.gallery.postgres.migrate import MigrationError, migrate_gallery
from service.keys import KeyStore
from service.pgstores import open_postgres
from tests.gallery.conftest import MODEL, unit


def _embedded(data: Path, rng: np.random.Generator) -> dict[str, object]:
    """A data dir with 30 subjects, 91 faces of two models (some with crops), staged embeddings, keys, audit."""
    g = open_gallery(data, auto_maintain=False)
    try:
        subjects = g.create_subjects([(f"person {i}", {"i": i}) for i in range(30)])
        crop = rng.integers(0, 255, (160, 160, 3), dtype=np.uint8)
        batch = {
            s.id: [
                NewFace(v, MODEL, box={"x": 1, "y": 2, "width": 3, "height": 4}, quality={"sharpness": 50.0},
                        image_sha256=f"{i:064x}", crop=crop if i % 2 else None)
                for v in unit(rng, 3)
            ]
            for i, s in enumerate(subjects)
        }  # fmt: skip
        recs = g.add_faces_many(batch)
        g.add_faces(subjects[0].id, [NewFace(v, "other-model") for v in unit(rng, 5)])
        g.delete_face(recs[4].id)  # a gap in the ids
        g.delete_subject(subjects[29].id)
        g.stage_embeddings("next-model", [recs[0].id, recs[1].id], unit(rng, 2))
        faces = {s.id: [f.id for f in g.list_faces(s.id)] for s in subjects[:29]}
    finally:
        g.close()
    keys = KeyStore(data)
    key, token = keys.create(scope="admin", name="ops")
    old, _ = keys.create(scope="recognize", name="old")
    keys.revoke(old.id)
    keys.close()
    audit = AuditLog(data)
    for i in range(7):
        audit.record("subject.create", actor={"key_id": key.id, "name": "ops"}, target={"subject_id": f"s{i}"})
    with open(data / "audit.log", "a") as f:
        f.write("not json\n")  # a torn line is left out, as `facerec audit tail` does
    return {"token": token, "faces": faces, "max_face": max(r.id for r in recs)}


def test_migrate_resumes_and_ends_with_identical_answers(tmp_path: Path, pg_url: str, rng) -> None:
    data = tmp_path / "data"
    made = _embedded(data, rng)
    stages: set[str] = set()
    first = migrate_gallery(data, pg_url, batch=20, sample=0, stop_after_batches=2)  # interrupted
    assert first.counts == {} and not first.resumed
    with psycopg.connect(pg_url) as c:
        assert c.execute("SELECT count(*) FROM faces").fetchone() == (40,)
    report = migrate_gallery(data, pg_url, batch=20, sample=60, progress=lambda s, d, t: stages.add(s))
    assert report.resumed and report.ok, report
    assert report.counts["faces"] == (91, 91) and report.counts["subjects"] == (29, 29)
    assert report.counts["faces of other-model"] == (5, 5) and report.counts["crops"][0] > 0
    assert report.counts["keys"] == (2, 2) and report.counts["audit"] == (7, 7) and report.counts["staged"] == (2, 2)
    assert report.probes == 60 and report.differences == []
    assert {"subjects", "faces", "keys", "audit", "verify"} <= stages
    again = migrate_gallery(data, pg_url, batch=20, sample=5)  # a third run copies nothing twice
    assert again.ok and again.counts["faces"] == (91, 91) and again.counts["audit"] == (7, 7)

    backend = open_postgres(pg_url)
    try:
        g = backend.gallery
        faces = made["faces"]
        assert isinstance(faces, dict)
        for sid, ids in faces.items():  # same subject ids, same face ids
            assert [f.id for f in g.list_faces(sid)] == ids
        some = g.get_face(next(iter(faces.values()))[0])
        assert some.box == {"x": 1, "y": 2, "width": 3, "height": 4} and some.quality == {"sharpness": 50.0}
        assert g.reindex_counts("next-model")["staged"] == 2
        token = made["token"]
        assert isinstance(token, str)
        assert backend.keys.authenticate(token) is not None  # old tokens keep working
        assert sum(k.revoked_at is not None for k in backend.keys.list()) == 1
        assert len(backend.audit.tail(100)) == 7
        sid = next(iter(faces))
        new = g.add_faces(sid, [NewFace(unit(rng, 1)[0], MODEL)])[0]
        assert new.id > int(made["max_face"])  # type: ignore[call-overload]
        assert g.create_subject(name="new").id not in faces
    finally:
        backend.close()


def test_cli_migrate_prints_the_report_and_refuses_another_gallery(tmp_path: Path, pg_url: str, rng) -> None:
    data = tmp_path / "data"
    _embedded(data, rng)
    result = CliRunner().invoke(app, ["gallery", "migrate", "--from", str(data), "--to", pg_url, "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["ok"] and out["counts"]["faces"] == {"source": 91, "target": 91}
    other = tmp_path / "other"
    _embedded(other, np.random.default_rng(5))
    result = CliRunner().invoke(app, ["gallery", "migrate", "--from", str(other), "--to", pg_url])
    assert result.exit_code == 2
    assert "migrated from another gallery" in result.output and "Traceback" not in result.output


def test_a_data_dir_in_use_is_refused(tmp_path: Path, pg_url: str, rng) -> None:
    data = tmp_path / "data"
    _embedded(data, rng)
    g = open_gallery(data, auto_maintain=False)  # a server holding the data dir
    try:
        with pytest.raises(MigrationError, match="stop the server"):
            migrate_gallery(data, pg_url)
    finally:
        g.close()
    with pytest.raises(MigrationError, match="no embedded gallery"):
        migrate_gallery(tmp_path / "empty", pg_url)
