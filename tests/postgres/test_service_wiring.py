"""The service on the PostgreSQL backend, in-process: FACEREC_DATABASE_URL selects it, the rate limit is one
bucket per caller across app instances (replicas), and a bad database configuration is one line from the CLI and
from `facerec serve`, never a traceback and never the password."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
from fastapi.testclient import TestClient
from psycopg import sql

from service.app import create_app
from service.config import Settings
from service.devdb import DevCluster, free_port
from service.pgstores import PostgresRateLimiter
from tests.service.server import REPO


class NoAnalyzer:
    """The app's model slot; these requests never reach it."""

    model_id = "none"
    threshold = 1.0


def no_analyzer(_: Settings) -> Any:
    """The ``analyzer_factory``: a stand-in with only what the app reads of a FaceAnalyzer, so typed Any."""
    return NoAnalyzer()


def _app(tmp_path: Path, url: str, name: str, **settings: Any) -> Any:
    s = Settings(data=tmp_path / name, database_url=url, **settings)
    return create_app(s, analyzer_factory=no_analyzer)


def test_replicas_share_one_rate_limit_bucket(tmp_path: Path, pg_url: str) -> None:
    a = _app(tmp_path, pg_url, "a", rate_limit_per_minute=6, rate_limit_burst=3)
    b = _app(tmp_path, pg_url, "b", rate_limit_per_minute=6, rate_limit_burst=3)
    local = {"base_url": "http://127.0.0.1:8000", "client": ("127.0.0.1", 50000)}
    with TestClient(a, **local) as ca, TestClient(b, **local) as cb:  # type: ignore[arg-type]
        assert isinstance(a.state.ratelimit, PostgresRateLimiter) and a.state.ratelimit is not b.state.ratelimit
        codes = [c.get("/v1/subjects").status_code for c in (ca, cb, ca, cb)]
        assert codes == [200, 200, 200, 429], codes  # burst 3 in total, not 3 per replica
        refused = cb.get("/v1/subjects")
        assert refused.status_code == 429 and refused.json()["error"]["code"] == "rate_limited"
        assert int(refused.headers["Retry-After"]) >= 1
    assert not (tmp_path / "a" / "keys.db").exists()  # nothing of the backend lives in the data dir


def _cli(*args: str, url: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "FACEREC_DATABASE_URL": url}
    return subprocess.run(
        [sys.executable, "-m", "service.cli", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )


def test_cli_and_serve_report_a_bad_database_in_one_line(pg_cluster: DevCluster) -> None:
    port = free_port()
    secret = "Sup3r-secret"
    cases = {
        f"postgresql://facerec:{secret}@127.0.0.1:{port}/facerec": f"cannot reach PostgreSQL at 127.0.0.1:{port}",
        f"postgresql://facerec:{secret}@127.0.0.1:{pg_cluster.port()}/facerec": "refused the credentials",
    }
    for url, expected in cases.items():
        for args in (["keys", "list"], ["serve", "--port", str(free_port())]):
            out = _cli(*args, url=url)
            text = out.stdout + out.stderr
            assert out.returncode != 0 and expected in text, (args, text[-2000:])
            assert secret not in text and "Traceback" not in text, text[-2000:]


def read_only(url: str, on: bool) -> None:
    """Make the database refuse writes (as a standby after a failover does) or take them again, for new sessions
    and, by ending them, the pools' current ones."""
    with psycopg.connect(url, autocommit=True) as conn:
        db = conn.info.dbname
        conn.execute("SET default_transaction_read_only = off")
        conn.execute(
            sql.SQL("ALTER DATABASE {} SET default_transaction_read_only = {}").format(
                sql.Identifier(db), sql.SQL("on" if on else "off")
            )
        )
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
            (db,),
        )


def test_reads_keep_working_with_the_rate_limit_on_a_read_only_database(tmp_path: Path, pg_url: str) -> None:
    """The shared rate limit writes its bucket at every request: on a database that refuses writes every request
    answered 503, reads included. Now each replica limits with its own buckets while it refuses writes (a caller
    over its rate still gets 429s): reads answer, writes 503."""
    app = _app(tmp_path, pg_url, "a", rate_limit_per_minute=60, rate_limit_burst=5)
    local = {"base_url": "http://127.0.0.1:8000", "client": ("127.0.0.1", 50000)}
    with TestClient(app, **local) as c:  # type: ignore[arg-type]
        sid = c.post("/v1/subjects", json={"name": "a"}).json()["id"]
        read_only(pg_url, True)
        try:
            r = c.get(f"/v1/subjects/{sid}")
            assert r.status_code == 200 and r.json()["name"] == "a", r.text
            assert c.get("/v1/subjects").status_code == 200
            w = c.post("/v1/subjects", json={"name": "b"})
            assert w.status_code == 503 and "read-only" in w.json()["error"]["message"], w.text
            statuses = [c.get(f"/v1/subjects/{sid}").status_code for _ in range(40)]  # burst 5, 1 a second
            assert set(statuses) == {200, 429} and statuses.count(429) > 20, statuses
        finally:
            read_only(pg_url, False)
        assert c.post("/v1/subjects", json={"name": "b"}).status_code == 201


def test_a_replica_starts_and_serves_reads_on_a_read_only_database(tmp_path: Path, pg_url: str) -> None:
    """A standby after a failover: a replica started on it crashed (the schema check's CREATE TABLE, then the
    first stream lease claim); it now starts, answers reads, and writes are 503."""
    with TestClient(_app(tmp_path, pg_url, "a"), base_url="http://127.0.0.1:8000", client=("127.0.0.1", 50000)) as c:
        sid = c.post("/v1/subjects", json={"name": "a"}).json()["id"]
        assert c.post("/v1/streams", json={"name": "door", "url": "rtsp://127.0.0.1:9/door"}).status_code == 201
    read_only(pg_url, True)
    try:
        app = _app(tmp_path, pg_url, "b")
        with TestClient(app, base_url="http://127.0.0.1:8000", client=("127.0.0.1", 50000)) as c:
            assert c.get(f"/v1/subjects/{sid}").json()["name"] == "a"
            assert [s["name"] for s in c.get("/v1/streams").json()] == ["door"]
            assert c.post("/v1/subjects", json={"name": "b"}).status_code == 503
    finally:
        read_only(pg_url, False)
