"""API keys that expire and their last use, on both key stores (``<data>/keys.db`` and the real PostgreSQL of the
test run), through the real app (fake analyzer) and the CLI: an expired key is a 401 that says so and nothing
runs; a key's last use is written once a minute at most, and not at all on storage that refuses it, without
failing the request; stores of the previous schema upgrade in place."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from service.keys import KEYS_FILE, MIGRATIONS, KeyStore, new_token
from tests.service.fakes import FakeAnalyzer, app_with, local
from tests.service.helpers import png

PAST = "2000-01-01T00:00:00+00:00"


class Where:
    """One key store of the test: the data dir's ``keys.db``, or the test's PostgreSQL database (``url``)."""

    def __init__(self, data: Path, url: str | None) -> None:
        self.data, self.url = data, url

    def settings(self) -> dict[str, Any]:
        return {"database_url": self.url} if self.url else {}

    def cli(self, *args: str) -> Any:
        from service.cli import app as cli

        env = {"COLUMNS": "250", **({"FACEREC_DATABASE_URL": self.url} if self.url else {})}
        return CliRunner().invoke(cli, [*args, "--data", str(self.data)], env=env)

    def sql(self, statement: str, *params: object) -> list[tuple[Any, ...]]:
        """Run one statement on the store's database directly (``?`` placeholders); its rows, if any."""
        if self.url is None:
            with sqlite3.connect(self.data / KEYS_FILE, isolation_level=None) as c:
                return c.execute(statement, params).fetchall()
        with psycopg.connect(self.url, autocommit=True) as c:
            cur = c.execute(statement.replace("?", "%s"), params)
            return cur.fetchall() if cur.description else []

    def create(self, *options: str) -> dict[str, Any]:
        made = self.cli("keys", "create", "--scope", "recognize", "--json", *options)
        assert made.exit_code == 0, made.output
        return dict(json.loads(made.stdout))

    def listed(self) -> list[dict[str, Any]]:
        out = self.cli("keys", "list", "--json")
        assert out.exit_code == 0, out.output
        return list(json.loads(out.stdout))


@pytest.fixture(params=["sqlite", "postgres"])
def where(request: pytest.FixtureRequest, tmp_path: Path) -> Where:
    return Where(tmp_path / "data", request.getfixturevalue("pg_url") if request.param == "postgres" else None)


class Counting(FakeAnalyzer):
    def __init__(self) -> None:
        self.runs = 0

        def detect() -> list[Any]:
            self.runs += 1
            return []

        super().__init__(detect)


@contextmanager
def served(where: Where, tmp_path: Path, **settings: Any) -> Iterator[tuple[Any, Counting]]:
    analyzer = Counting()
    app = app_with(tmp_path, lambda _: analyzer, **where.settings(), **settings)
    with TestClient(app):
        yield app, analyzer


def detect(client: TestClient, token: str | None = None) -> Any:
    headers = {"X-API-Key": token} if token else {}
    return client.post("/v1/detect", files={"image": png(8, 8)}, headers=headers)


def test_an_expired_key_is_a_401_that_says_so_and_nothing_runs(where: Where, tmp_path: Path) -> None:
    key = where.create("--expires-in", "1h")
    assert key["expires_at"] > time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(time.time() + 3590))
    with served(where, tmp_path, rate_limit_per_minute=6, rate_limit_burst=2) as (app, analyzer):
        remote = TestClient(app)
        assert detect(remote, key["token"]).status_code == 200 and analyzer.runs == 1
        where.sql("UPDATE api_keys SET expires_at = ? WHERE id = ?", PAST, key["id"])
        r = detect(remote, key["token"])
        assert r.status_code == 401 and r.headers["WWW-Authenticate"] == "ApiKey", r.text
        assert r.json() == {"error": {"code": "unauthorized", "message": f"the API key expired at {PAST}"}}
        assert analyzer.runs == 1
        # limited per client IP like an unknown key (the 200 above was the key's bucket, not the IP's)
        assert [detect(remote, key["token"]).status_code for _ in range(2)] == [401, 429]
        # every key expired: as when every key is revoked, plainly local requests need none, others do
        assert not app.state.keys.has_active()
        other = TestClient(app, client=("203.0.113.9", 50000))  # a remote client not limited yet
        assert detect(local(app)).status_code == 200 and detect(other).status_code == 401
    (listed,) = where.listed()
    assert (listed["state"], listed["expires_at"], listed["revoked_at"]) == ("expired", PAST, None)
    table = where.cli("keys", "list")
    row = next(line for line in table.stdout.splitlines() if key["id"] in line)
    assert table.exit_code == 0 and PAST in row and row.split("│")[-2].strip() == "expired", table.stdout
    assert where.cli("keys", "revoke", key["id"]).exit_code == 0  # an expired key can still be revoked
    assert where.listed()[0]["state"] == "revoked"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--expires-in", "0d"], "--expires-in must be longer than zero"),
        (["--expires-in", "-5d"], "not a duration: '-5d'"),
        (["--expires-in", "3 days"], "not a duration"),
        (["--expires-in", "\uff15m"], "not a duration"),  # a full-width digit
        (["--expires-in", "9999999w"], "ends after the year 9999"),
        (["--expires-at", "2000-01-01T00:00:00Z"], "--expires-at 2000-01-01T00:00:00+00:00 is not in the future"),
        (["--expires-at", "next tuesday"], "--expires-at is not an ISO 8601 time"),
        (["--expires-in", "1d", "--expires-at", "2999-01-01"], "not both"),
        (["--expires-at", "9999-12-31T23:30:00-05:00"], "--expires-at is out of range"),  # past year 9999 in UTC
        (["--expires-at", "0001-01-01T00:00:00+05:00"], "--expires-at is out of range"),
    ],
)
def test_an_expiry_that_is_not_in_the_future_is_refused(tmp_path: Path, options: list[str], message: str) -> None:
    where = Where(tmp_path / "data", None)
    out = where.cli("keys", "create", "--scope", "admin", *options)
    assert out.exit_code == 2 and out.stdout == "", out.output
    assert out.stderr.startswith("error: ") and message in out.stderr and out.stderr.count("\n") == 1, out.stderr
    assert not where.data.exists()  # nothing made, not even the data dir


def test_expiry_is_stored_in_utc_listed_and_audited(where: Where) -> None:
    never = where.create()
    later = where.create("--expires-at", "2999-01-01T02:00:00+02:00")
    naive = where.create("--expires-at", "2999-06-01T12:00:00")  # no zone: UTC
    assert (never["expires_at"], later["expires_at"]) == (None, "2999-01-01T00:00:00+00:00")
    assert naive["expires_at"] == "2999-06-01T12:00:00+00:00"
    listed = where.listed()
    assert [(k["expires_at"], k["state"], k["last_used_at"]) for k in listed] == [
        (None, "active", None),
        ("2999-01-01T00:00:00+00:00", "active", None),
        ("2999-06-01T12:00:00+00:00", "active", None),
    ]
    tail = where.cli("audit", "tail", "-n", "3", "--json")
    records = [json.loads(line) for line in tail.stdout.splitlines()]
    assert [r["target"] for r in records] == [
        {"key_id": never["id"], "scope": "recognize", "expires_at": None},
        {"key_id": later["id"], "scope": "recognize", "expires_at": "2999-01-01T00:00:00+00:00"},
        {"key_id": naive["id"], "scope": "recognize", "expires_at": "2999-06-01T12:00:00+00:00"},
    ]


def test_a_key_used_twice_within_a_minute_writes_its_last_use_once(where: Where, tmp_path: Path) -> None:
    key = where.create()
    with served(where, tmp_path) as (app, _):
        client = TestClient(app)
        assert detect(client, key["token"]).status_code == 200
        assert app.state.key_usage.flush()
        (used,) = where.sql("SELECT last_used_at FROM api_keys WHERE id = ?", key["id"])
        assert used[0] is not None and used[0].endswith("+00:00")
        where.sql("UPDATE api_keys SET last_used_at = NULL")  # a second write would show
        assert detect(client, key["token"]).status_code == 200
        assert app.state.key_usage.flush()
        assert where.sql("SELECT last_used_at FROM api_keys") == [(None,)]
    where.sql("UPDATE api_keys SET last_used_at = ?", used[0])
    assert where.listed()[0]["last_used_at"] == used[0]


def test_a_key_store_that_refuses_the_write_still_admits_requests(where: Where, tmp_path: Path) -> None:
    key = where.create()
    with served(where, tmp_path) as (app, analyzer):
        if where.url is None:  # a read-only data dir: what SQLite opens when the file is not writable
            uri = f"file:{where.data / KEYS_FILE}?mode=ro"
            app.state.keys._used_db = sqlite3.connect(uri, uri=True, check_same_thread=False, isolation_level=None)
        else:  # a read-only database (a standby, default_transaction_read_only)
            where.sql(
                "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS "
                "$$ BEGIN RAISE EXCEPTION 'read-only' USING ERRCODE = '25006'; END $$"
            )
            where.sql("CREATE TRIGGER refuse BEFORE UPDATE ON api_keys FOR EACH ROW EXECUTE FUNCTION refuse()")
        client = TestClient(app)
        started = time.monotonic()
        assert detect(client, key["token"]).status_code == 200
        assert time.monotonic() - started < 2.0
        assert app.state.key_usage.flush()  # the write was tried and failed
        assert detect(client, key["token"]).status_code == 200 and analyzer.runs == 2
    assert where.sql("SELECT last_used_at FROM api_keys") == [(None,)]


def test_a_key_store_never_moves_the_last_use_backwards(where: Where, tmp_path: Path) -> None:
    key = where.create()
    with served(where, tmp_path) as (app, _):
        keys = app.state.keys
        keys.mark_used({key["id"]: "2030-01-01T00:00:10+00:00"})
        keys.mark_used({key["id"]: "2030-01-01T00:00:05+00:00", "unknown": "2030-01-01T00:00:05+00:00"})
        assert [k.last_used_at for k in keys.list()] == ["2030-01-01T00:00:10+00:00"]
        keys.mark_used({key["id"]: "2030-01-01T00:01:10+00:00"})
        assert [k.last_used_at for k in keys.list()] == ["2030-01-01T00:01:10+00:00"]


V1_KEYS_SQL = MIGRATIONS[1]
"""``keys.db`` as the code before expiries made it (version 1, without ``user_version``)."""


def test_a_keys_db_of_the_previous_schema_upgrades_in_place(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    key_id, token, digest = new_token()
    with sqlite3.connect(data / KEYS_FILE) as c:
        c.execute("PRAGMA journal_mode=WAL")
        c.executescript(V1_KEYS_SQL)
        c.execute(
            "INSERT INTO api_keys (id, name, scope, token_sha256, created_at) VALUES (?, 'old', 'admin', ?, ?)",
            (key_id, digest, "2024-01-01T00:00:00+00:00"),
        )
    store = KeyStore(data)
    try:
        key = store.authenticate(token)
        assert key is not None and key.active and (key.expires_at, key.last_used_at) == (None, None)
        store.mark_used({key_id: "2030-01-01T00:00:00+00:00"})
        assert store.has_active() and store.list()[0].last_used_at == "2030-01-01T00:00:00+00:00"
    finally:
        store.close()
    with sqlite3.connect(data / KEYS_FILE) as c:
        assert c.execute("PRAGMA user_version").fetchone() == (2,)
    KeyStore(data).close()  # opening an upgraded file again changes nothing


def test_a_postgres_schema_of_the_previous_version_upgrades_in_place(pg_url: str) -> None:
    from service.gallery.postgres.schema import MIGRATIONS
    from service.pgstores import open_postgres

    key_id, token, digest = new_token()
    with psycopg.connect(pg_url, autocommit=True) as c:  # the database as version 5 of the code left it
        c.execute("CREATE EXTENSION IF NOT EXISTS vector")
        c.execute("CREATE TABLE facerec_schema (version integer PRIMARY KEY, applied_at timestamptz DEFAULT now())")
        for version in range(1, 6):
            c.execute(MIGRATIONS[version])
            c.execute("INSERT INTO facerec_schema (version) VALUES (%s)", (version,))
        c.execute("INSERT INTO meta (key, value) VALUES ('gallery_uuid', 'x')")
        c.execute(
            "INSERT INTO api_keys (id, name, scope, token_sha256, created_at) VALUES (%s, 'old', 'admin', %s, %s)",
            (key_id, digest, "2024-01-01T00:00:00+00:00"),
        )
    backend = open_postgres(pg_url)
    try:
        key = backend.keys.authenticate(token)
        assert key is not None and key.active and (key.expires_at, key.last_used_at) == (None, None)
        backend.keys.mark_used({key_id: "2030-01-01T00:00:00+00:00"})
        assert backend.keys.list()[0].last_used_at == "2030-01-01T00:00:00+00:00"
    finally:
        backend.close()
    with psycopg.connect(pg_url) as c:
        assert c.execute("SELECT max(version) FROM facerec_schema").fetchone() == (6,)


def test_a_server_whose_every_key_expired_refuses_to_listen_off_loopback(where: Where) -> None:
    from service.app import KeysRequired, check_bind
    from service.bootstrap import open_backend
    from service.config import Settings

    where.create()
    where.sql("UPDATE api_keys SET expires_at = ?", PAST)
    settings = Settings(data=where.data, host="0.0.0.0", **where.settings())
    backend = open_backend(settings, gallery=False)
    try:
        with pytest.raises(KeysRequired, match="no active API key exists"):
            check_bind(settings, backend.keys)
    finally:
        backend.close()
