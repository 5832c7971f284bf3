"""``facerec gallery migrate`` copies each key's expiry and last use into PostgreSQL."""

from __future__ import annotations

from pathlib import Path

from service.gallery import open_gallery
from service.gallery.postgres.migrate import migrate_gallery
from service.keys import KeyStore
from service.pgstores import open_postgres


def test_migrate_copies_the_expiry_and_last_use_of_keys(tmp_path: Path, pg_url: str) -> None:
    data = tmp_path / "data"
    open_gallery(data, auto_maintain=False).close()
    keys = KeyStore(data)
    try:
        keys.create(scope="admin", name="forever")
        expiring, token = keys.create(scope="recognize", name="rotated", expires_at="2999-01-01T00:00:00+00:00")
        keys.mark_used({expiring.id: "2030-01-01T00:00:00+00:00"})
        before = keys.list()
    finally:
        keys.close()
    report = migrate_gallery(data, pg_url, sample=0)
    assert report.ok and report.counts["keys"] == (2, 2), report
    backend = open_postgres(pg_url)
    try:
        assert backend.keys.list() == before
        assert backend.keys.authenticate(token) == before[1]
    finally:
        backend.close()
