"""Erasure audited from outside on PostgreSQL: a person enrolled through a real server on the test run's real
cluster (real photos, MTCNN, FaceNet), with faces in the photo library, is erased; then the cluster's files (the
database's heap, TOAST and index files, and ``pg_wal``) are scanned for the bytes of their embeddings (float32
little-endian: pgvector's ``vector`` and the photo store's ``bytea`` both hold them so) and crops (PNG), at each
step that docs/GALLERY.md ("What erasure removes") names: when the DELETE returns, after ``facerec gallery vacuum``
(``VACUUM``), after ``facerec gallery vacuum --full`` (``VACUUM FULL``)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psycopg
import pytest
from typer.testing import CliRunner

from service.cli import app
from service.devdb import DevCluster
from tests.service.conftest import dataset
from tests.service.helpers import images
from tests.service.server import Server

pytestmark = pytest.mark.slow
__all__ = ["dataset"]

PERSON, KEPT = "madonna", "elton_john"
TABLES = ("faces", "face_crops", "face_embeddings", "observations")


def _pieces(blob: bytes, size: int) -> list[bytes]:
    return [blob[i : i + size] for i in range(0, len(blob) - size + 1, size)]


@pytest.fixture
def server(tmp_path: Path, pg_url: str, dataset: Path) -> Iterator[Server]:
    env = {
        "FACEREC_DATABASE_URL": pg_url,
        "FACEREC_PHOTO_LIBRARY": "true",
        "FACEREC_PHOTO_RECLUSTER_INTERVAL_S": "0",
        "FACEREC_RATE_LIMIT_PER_MINUTE": "0",
    }
    yield from Server(tmp_path / "data", env=env).serving()


def _leaks(cluster: DevCluster, db_oid: int, secrets: list[bytes]) -> dict[str, list[str]]:
    """``where -> files`` holding a piece of a secret: ``database`` (base/<oid>/) or ``pg_wal``."""
    out: dict[str, list[str]] = {}
    for where, root in (("database", cluster.pgdata / "base" / str(db_oid)), ("pg_wal", cluster.pgdata / "pg_wal")):
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            try:
                blob = path.read_bytes()
            except FileNotFoundError:  # a temporary file the server removed meanwhile
                continue
            if any(piece in blob for s in secrets for piece in _pieces(s, 32)):
                out.setdefault(where, []).append(path.name)
    return out


def _vacuum(url: str, *flags: str) -> dict[str, Any]:
    """``facerec gallery vacuum [flags] --json`` as the service's own user (the tables' owner)."""
    result = CliRunner().invoke(app, ["gallery", "vacuum", "--database-url", url, "--json", *flags])
    assert result.exit_code == 0, result.output
    report: dict[str, Any] = json.loads(result.stdout)
    assert {t["table"] for t in report["tables"]} >= set(TABLES)
    return report


def test_what_postgresql_keeps_of_an_erased_person(
    server: Server, pg_url: str, pg_cluster: DevCluster, dataset: Path
) -> None:
    with httpx.Client(base_url=server.url, timeout=120) as client:
        sid = client.post("/v1/subjects", json={"name": PERSON}).json()["id"]
        files = [("images", (p.name, p.read_bytes(), "image/jpeg")) for p in images(dataset, "train", PERSON)[:5]]
        assert client.post(f"/v1/subjects/{sid}/faces", files=files).status_code == 201
        for path in images(dataset, "train", PERSON)[5:8]:
            assert client.post("/v1/photos", files={"image": path.read_bytes()}).status_code == 201
        kept = client.post("/v1/subjects", json={"name": KEPT}).json()["id"]  # rows after theirs on the pages
        files = [("images", (p.name, p.read_bytes(), "image/jpeg")) for p in images(dataset, "train", KEPT)[:5]]
        assert client.post(f"/v1/subjects/{kept}/faces", files=files).status_code == 201
        for path in images(dataset, "train", KEPT)[5:8]:
            assert client.post("/v1/photos", files={"image": path.read_bytes()}).status_code == 201

        with psycopg.connect(pg_url, autocommit=True) as c:
            (db_oid,) = c.execute("SELECT oid FROM pg_database WHERE datname = current_database()").fetchall()[0]
            rows = c.execute(
                "SELECT f.embedding::real[], c.png FROM faces f JOIN subjects s ON s.pk = f.subject_pk "
                "JOIN face_crops c ON c.face_id = f.id WHERE s.id = %s",
                (sid,),
            ).fetchall()
            photo_rows = c.execute("SELECT embedding, crop FROM observations WHERE subject_id = %s", (sid,)).fetchall()
        assert rows and photo_rows
        embeddings = [np.asarray(e, "<f4").tobytes() for e, _ in rows] + [bytes(e) for e, _ in photo_rows]
        crops = [bytes(p)[64:] for _, p in rows] + [bytes(p)[64:] for _, p in photo_rows]
        with psycopg.connect(pg_cluster.url(pg_url.rsplit("/", 1)[1], user="postgres"), autocommit=True) as su:
            su.execute("CHECKPOINT")
            before = _leaks(pg_cluster, db_oid, embeddings + crops)
            assert "database" in before  # the scan finds them while they are enrolled

            r = client.delete(f"/v1/subjects/{sid}", params={"erase_photo_faces": "true"})
            assert r.status_code == 204, r.text
            su.execute("CHECKPOINT")
            steps = {"delete": _leaks(pg_cluster, db_oid, embeddings + crops)}
            _vacuum(pg_url)
            su.execute("CHECKPOINT")
            steps["vacuum"] = _leaks(pg_cluster, db_oid, embeddings + crops)
            names = {
                str(node): name
                for node, name in su.execute("SELECT pg_relation_filenode(oid), relname FROM pg_class").fetchall()
                if node is not None
            }
            _vacuum(pg_url, "--full")
            su.execute("CHECKPOINT")
            steps["vacuum full"] = _leaks(pg_cluster, db_oid, embeddings + crops)
    named = {step: {w: sorted(names.get(f, f) for f in fs) for w, fs in found.items()} for step, found in steps.items()}
    print(named)
    assert named["delete"].get("database")  # dead rows: in the table, TOAST and index files until VACUUM
    assert set(named["vacuum"].get("database", [])) <= {n for n in names.values() if n.startswith("pg_toast_")}
    assert named["vacuum full"].get("database") is None  # rewritten without them
