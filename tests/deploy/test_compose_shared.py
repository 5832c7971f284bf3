"""The `shared` profile of docker-compose.yml (PostgreSQL with pgvector, two facerec replicas, nginx), checked
statically like the default deployment: the official pgvector image, replicas built like `facerec` and pointed
at that database, every FACEREC_* a real setting with a valid value, one replica bootstrapping the first key,
and an nginx upstream that lists exactly the replicas on their port."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

import pytest

from tests.deploy import deployfiles as df
from tests.deploy.deployfiles import ROOT, compose, compose_environment, compose_service

REPLICAS = ("replica-a", "replica-b")
NGINX_CONF = ROOT / "docker" / "nginx-replicas.conf"


def _shared() -> dict[str, dict]:
    return {n: s for n, s in compose()["services"].items() if "shared" in (s.get("profiles") or [])}


def test_profile_has_postgres_two_replicas_and_a_proxy() -> None:
    assert set(_shared()) == {"postgres", *REPLICAS, "proxy"}
    pg = compose_service("postgres")
    assert pg["image"].startswith("pgvector/pgvector:") and "-pg" in pg["image"]
    assert "pg_isready" in pg["healthcheck"]["test"]
    assert any(str(v).endswith(":/var/lib/postgresql") for v in pg["volumes"])  # durable database volume
    assert "facerec-postgres" in compose()["volumes"]


def test_replicas_are_the_facerec_image_pointed_at_that_database(monkeypatch: pytest.MonkeyPatch) -> None:
    from service.config import Settings

    base = compose_service()
    pg_env = compose_service("postgres")["environment"]
    for name in REPLICAS:
        replica = compose_service(name)
        assert replica["build"] == base["build"] and replica["image"] == base["image"]
        assert replica["depends_on"]["postgres"]["condition"] == "service_healthy"
        assert "ports" not in replica, "replicas are reached through the proxy only"
        env = compose_environment(name)
        assert not {n for n in env if n.startswith("FACEREC_")} - df.known_variables()
        url = urlsplit(env["FACEREC_DATABASE_URL"].replace("${POSTGRES_PASSWORD:?set POSTGRES_PASSWORD}", "pw"))
        assert (url.hostname, url.port, url.path.lstrip("/")) == ("postgres", 5432, pg_env["POSTGRES_DB"])
        assert url.username == pg_env["POSTGRES_USER"]
        assert (
            "${POSTGRES_PASSWORD" in env["FACEREC_DATABASE_URL"]
            and "${POSTGRES_PASSWORD" in pg_env["POSTGRES_PASSWORD"]
        )
        for key, value in env.items():
            monkeypatch.setenv(key, value.replace("${POSTGRES_PASSWORD:?set POSTGRES_PASSWORD}", "pw"))
        settings = Settings()
        assert settings.database_url and settings.vector_engine == "pgvector" and settings.port == 8000
        assert "/readyz" in " ".join(replica["healthcheck"]["test"])
    bootstrap = [n for n in REPLICAS if compose_environment(n).get("FACEREC_BOOTSTRAP_ADMIN_KEY_FILE")]
    assert bootstrap == ["replica-a"], "exactly one replica creates the first key (two would race)"


def test_proxy_balances_exactly_the_replicas_on_loopback() -> None:
    proxy = compose_service("proxy")
    assert proxy["image"].startswith("nginx:")
    host_ip, _, container_port = str(proxy["ports"][0]).rsplit(":", 2)
    assert host_ip == "127.0.0.1"
    mounts = [str(v).split(":") for v in proxy["volumes"]]
    assert any((ROOT / src).resolve() == NGINX_CONF for src, *_ in mounts)
    conf = NGINX_CONF.read_text()
    assert re.search(rf"^\s*listen\s+{container_port};", conf, re.M)
    upstream = re.search(r"upstream\s+(\w+)\s*\{([^}]*)\}", conf)
    assert upstream is not None
    servers = re.findall(r"^\s*server\s+([\w.-]+):(\d+)", upstream.group(2), re.M)
    port = compose_environment("replica-a")["FACEREC_PORT"]
    assert sorted(servers) == sorted((n, port) for n in REPLICAS)
    assert f"proxy_pass http://{upstream.group(1)};" in conf
    assert set(proxy["depends_on"]) == set(REPLICAS)
    body = re.search(r"client_max_body_size\s+(\d+)m;", conf)
    assert body is not None and int(body.group(1)) * 2**20 > 10 * 2**20  # facerec answers 413 itself


def test_make_serve_replicas_starts_the_database_and_one_replica_per_port() -> None:
    """The documented one-command start (README): its recipe, as make would run it (``make -n``); that it really
    serves was run by hand (docs/POSTGRES.md), the same commands run for real in tests/postgres."""
    import subprocess

    out = subprocess.run(
        [
            "make",
            "-n",
            "-C",
            str(ROOT),
            "serve-replicas",
            "VENV=/opt/venv-x",
            "PGDIR=/tmp/pgx",
            "REPLICA_PORTS=7001 7002",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "/opt/venv-x/bin/facerec db start --dir /tmp/pgx" in out
    assert '"$(/opt/venv-x/bin/facerec db url --dir /tmp/pgx)"' in out
    assert 'FACEREC_DATABASE_URL="$url" /opt/venv-x/bin/facerec serve --host 127.0.0.1 --port $port &' in out
    assert "for port in 7001 7002" in out and "trap " in out and "wait" in out
    for words in (["db", "start", "--dir", "x"], ["db", "url", "--dir", "x"], ["serve", "--port", "1"]):
        df.resolve_cli(words)  # real commands of the CLI
    assert "make serve-replicas" in (ROOT / "README.md").read_text()
