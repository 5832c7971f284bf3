"""Fixtures of the backup tests: no facerec setting from the environment (a cache of the test's own), and a data
dir of real stores."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest

from service.audit import AuditLog
from service.gallery.sqlite.schema import DB_NAME
from service.keys import KeyStore


@pytest.fixture(autouse=True)
def no_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No ``FACEREC_*`` of the caller's; ``FACEREC_CACHE`` is ``<tmp>/cache`` (not made), never the real cache."""
    for name in [n for n in os.environ if n.startswith("FACEREC_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("FACEREC_CACHE", str(tmp_path / "cache"))


@pytest.fixture
def data(tmp_path: Path) -> Path:
    """A data dir: keys.db with one key, two audit records, a gallery database (a table of 3 rows standing in
    for the schema), an index snapshot, a lock file, a video upload and a database left open (a -wal file)."""
    root = tmp_path / "data"
    keys = KeyStore(root)
    key, _ = keys.create(scope="admin", name="ops")
    keys.close()
    audit = AuditLog(root)
    for action in ("key.create", "key.revoke"):
        audit.record(action, actor="cli:test", target={"key_id": key.id}, via="cli")
    with sqlite3.connect(root / DB_NAME) as db:
        db.execute("CREATE TABLE subjects (pk INTEGER PRIMARY KEY, name TEXT)")
        db.execute("CREATE TABLE faces (id INTEGER PRIMARY KEY, model_id TEXT)")
        db.executemany("INSERT INTO subjects (name) VALUES (?)", [("a",), ("b",)])
        db.executemany("INSERT INTO faces (model_id) VALUES (?)", [("m1",), ("m1",), ("m2",)])
    db.close()
    (root / "index").mkdir()
    (root / "index" / "m1.snap").write_bytes(b"rebuilt")
    (root / "LOCK").write_text("123\n")
    (root / "uploads").mkdir()
    (root / "uploads" / "job.video").write_bytes(b"video bytes")
    return root
