"""``facerec gallery vacuum`` on the test run's real cluster: every personal-data table of a migrated database is
vacuumed; a table held by another transaction is reported after the lock timeout instead of blocking, with the
tables before it done; a user who may not vacuum the tables gets an error, not PostgreSQL's silent skip."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable

import psycopg
from typer.testing import CliRunner

from service.cli import app
from service.devdb import DevCluster
from service.gallery.postgres.maintenance import PERSONAL_TABLES
from service.pgstores import PostgresBackend


def _run(url: str, *flags: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["gallery", "vacuum", "--database-url", url, *flags])
    return result.exit_code, result.output


def test_every_personal_table_of_the_schema_is_vacuumed(
    open_replica: Callable[..., PostgresBackend], pg_url: str
) -> None:
    open_replica().close()  # the schema, as a replica creates it
    code, out = _run(pg_url, "--json")
    assert code == 0, out
    report = json.loads(out)
    tables = [t["table"] for t in report["tables"]]
    # every table of the schema except the Milvus engine's outbox (not made with pgvector) is there, in order
    assert tables == [t for t in PERSONAL_TABLES if t != "vector_outbox"]
    assert all(t["bytes_after"] > 0 and t["seconds"] >= 0 for t in report["tables"])
    assert report["full"] is False


def test_a_table_in_use_is_reported_after_the_lock_timeout(
    open_replica: Callable[..., PostgresBackend], pg_url: str
) -> None:
    open_replica().close()
    with psycopg.connect(pg_url) as reader:  # a transaction that read faces holds its lock until it ends
        reader.execute("SELECT count(*) FROM faces").fetchone()
        code, out = _run(pg_url, "--full", "--lock-timeout", "0.5")
        assert code == 1, out
        assert "faces is in use" in out and "1 of" in out  # subjects, before faces, was done
        reader.rollback()
    code, out = _run(pg_url, "--full")
    assert code == 0, out
    assert "face_crops" in out


def test_a_user_who_may_not_vacuum_gets_an_error(
    open_replica: Callable[..., PostgresBackend], pg_url: str, pg_cluster: DevCluster
) -> None:
    open_replica().close()
    database = pg_url.rsplit("/", 1)[1]
    role, password = f"reader_{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    with psycopg.connect(pg_cluster.url(database, user="postgres"), autocommit=True) as su:
        su.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{password}'")
        try:
            other = pg_url.replace(pg_url.split("//", 1)[1].split("@", 1)[0], f"{role}:{password}")
            code, out = _run(other)
            assert code == 1, out
            assert "subjects was not vacuumed" in out and "owner" in out
        finally:
            su.execute(f"DROP ROLE {role}")
