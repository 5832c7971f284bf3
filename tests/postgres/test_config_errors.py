"""A bad FACEREC_DATABASE_URL gets one clear sentence naming host:port/database, never the password and never a
stack trace; each case against the real server."""

from __future__ import annotations

from collections.abc import Callable

import psycopg
import pytest
from psycopg import sql

from service.config import Settings
from service.devdb import DevCluster, free_port
from service.gallery.postgres import SCHEMA_VERSION, DatabaseConfigError, SchemaTooNew
from service.gallery.postgres.connection import location
from service.gallery.postgres.vectors import ensure_index, index_name
from service.pgstores import open_postgres, open_postgres_backend
from tests.postgres.test_service_wiring import read_only

SECRET = "s3cret-Pa55word"


def _refused(url: str) -> DatabaseConfigError:
    with pytest.raises(DatabaseConfigError) as info:
        open_postgres(url)
    message = str(info.value)
    assert SECRET not in message
    assert "\n" not in message and "Traceback" not in message
    return info.value


def test_unreachable_host_names_host_and_port() -> None:
    port = free_port()
    err = _refused(f"postgresql://facerec:{SECRET}@127.0.0.1:{port}/facerec")
    assert f"cannot reach PostgreSQL at 127.0.0.1:{port}/facerec" in str(err)
    assert "refused" in str(err).lower()


def test_unknown_host_names_it() -> None:
    err = _refused(f"postgresql://facerec:{SECRET}@db.invalid:5432/facerec")
    assert "db.invalid:5432/facerec" in str(err)


def test_wrong_password(pg_cluster: DevCluster) -> None:
    port = pg_cluster.port()
    err = _refused(f"postgresql://facerec:{SECRET}@127.0.0.1:{port}/facerec")
    assert f"127.0.0.1:{port}/facerec refused the credentials" in str(err)


def test_missing_database(pg_cluster: DevCluster) -> None:
    err = _refused(pg_cluster.url("no_such_db"))
    assert "database does not exist" in str(err) and "no_such_db" in str(err)
    assert pg_cluster.password() not in str(err)


def test_database_without_pgvector_and_no_right_to_create_it(pg_cluster: DevCluster) -> None:
    """A managed PostgreSQL where the service's user may not create extensions: say what a superuser must run."""
    name = "t_novector"
    with pg_cluster.admin() as c:
        c.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0 OWNER facerec").format(sql.Identifier(name)))
    try:
        err = _refused(pg_cluster.url(name))
        assert "pgvector extension is not enabled" in str(err)
        assert "CREATE EXTENSION vector" in str(err)
        with psycopg.connect(pg_cluster.url(name)) as c:  # nothing was created
            assert c.execute("SELECT to_regclass('faces')").fetchone() == (None,)
    finally:
        pg_cluster.drop_database(name)


def test_superuser_enables_pgvector_itself(pg_cluster: DevCluster) -> None:
    name = "t_selfvector"
    with pg_cluster.admin() as c:
        c.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(name)))
    try:
        backend = open_postgres(pg_cluster.url(name, user="postgres"))
        backend.close()
        with psycopg.connect(pg_cluster.url(name, user="postgres")) as c:
            assert c.execute("SELECT 1 FROM pg_extension WHERE extname = 'vector'").fetchone() == (1,)
    finally:
        pg_cluster.drop_database(name)


def test_schema_newer_than_the_code_refuses_to_start(pg_url: str) -> None:
    open_postgres(pg_url).close()
    with psycopg.connect(pg_url, autocommit=True) as c:
        c.execute("INSERT INTO facerec_schema (version) VALUES (%s)", (SCHEMA_VERSION + 1,))
    with pytest.raises(SchemaTooNew) as info:
        open_postgres(pg_url)
    assert f"schema version {SCHEMA_VERSION + 1}, newer than this code" in str(info.value)
    assert location(pg_url) in str(info.value)


def test_migrations_run_once_and_are_recorded_when_replicas_start_together(pg_url: str) -> None:
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(4) as pool:  # four replicas starting at once on an empty database
        for backend in list(pool.map(lambda _: open_postgres(pg_url), range(4))):
            backend.close()
    with psycopg.connect(pg_url) as c:
        rows = c.execute("SELECT version FROM facerec_schema ORDER BY version").fetchall()
        uuids = c.execute("SELECT count(*) FROM meta WHERE key = 'gallery_uuid'").fetchone()
    assert rows == [(v,) for v in range(1, SCHEMA_VERSION + 1)]
    assert uuids == (1,)


def test_invalid_url_is_a_clear_error() -> None:
    err = _refused(f"postgresql://facerec:{SECRET}@127.0.0.1:5432/facerec?bogus_option=1")
    assert "not a valid PostgreSQL URL" in str(err)


def test_database_config_error_never_leaks_in_location(pg_new_db: Callable[..., str]) -> None:
    assert location(pg_new_db()).startswith("127.0.0.1:")
    assert location(f"postgresql://u:{SECRET}@h:1/d") == "h:1/d"


def test_index_build_settings_reach_the_index(pg_url: str) -> None:
    """``FACEREC_PGVECTOR_HNSW_M`` / ``_EF_CONSTRUCTION`` are the parameters of the HNSW index built next."""
    settings = Settings(database_url=pg_url, pgvector_hnsw_m=24, pgvector_ef_construction=60)
    backend = open_postgres_backend(settings)
    try:
        with backend.database.pool.connection() as conn:
            assert ensure_index(conn, "model-x", backend.gallery.options)
            row = conn.execute("SELECT pg_get_indexdef(to_regclass(%s))", (index_name("model-x"),)).fetchone()
        assert row is not None and "m='24'" in row[0] and "ef_construction='60'" in row[0], row
    finally:
        backend.close()


def test_a_read_only_database_with_the_current_schema_is_served(pg_url: str) -> None:
    """A standby after a failover (or ``default_transaction_read_only``): a replica started on it serves reads; it
    crashed with a traceback on the schema check's CREATE TABLE."""
    backend = open_postgres(pg_url)
    sid = backend.gallery.create_subject(name="a").id
    backend.close()
    read_only(pg_url, True)
    try:
        backend = open_postgres(pg_url)
        try:
            assert backend.gallery.get_subject(sid).name == "a"
        finally:
            backend.close()
    finally:
        read_only(pg_url, False)


def test_a_read_only_database_without_the_schema_is_one_clear_sentence(pg_url: str) -> None:
    read_only(pg_url, True)
    try:
        error = _refused(pg_url)
    finally:
        read_only(pg_url, False)
    assert "read-only" in str(error) and location(pg_url) in str(error), error
