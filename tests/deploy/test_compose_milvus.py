"""The `milvus` profile of docker-compose.yml (standalone Milvus with its etcd and MinIO, the shared PostgreSQL, two
facerec replicas on Milvus, nginx), checked statically: official images pinned to a version, Milvus pointed at its
etcd and object storage with the same secret as MinIO, replicas built like `facerec` with every FACEREC_* a real
setting that selects the Milvus engine at that server, one replica bootstrapping the first key, and an nginx
upstream listing exactly the two replicas."""

from __future__ import annotations

import re

import pytest

from tests.deploy import deployfiles as df
from tests.deploy.deployfiles import ROOT, compose, compose_environment, compose_service

REPLICAS = ("milvus-replica-a", "milvus-replica-b")
NGINX_CONF = ROOT / "docker" / "nginx-milvus.conf"
SECRETS = {
    "${POSTGRES_PASSWORD:?set POSTGRES_PASSWORD}": "pw",
    "${MINIO_ROOT_PASSWORD:?set MINIO_ROOT_PASSWORD for the milvus profile}": "minio-pw",
}


def _profile() -> dict[str, dict]:
    return {n: s for n, s in compose()["services"].items() if "milvus" in (s.get("profiles") or [])}


def _fill(value: str) -> str:
    for k, v in SECRETS.items():
        value = value.replace(k, v)
    return value


def test_profile_services_and_official_images() -> None:
    assert set(_profile()) == {"postgres", "milvus-etcd", "milvus-minio", "milvus", *REPLICAS, "milvus-proxy"}
    images = {n: compose_service(n)["image"] for n in ("milvus", "milvus-etcd", "milvus-minio", "postgres")}
    assert re.fullmatch(r"milvusdb/milvus:v2\.\d+\.\d+", images["milvus"])
    assert re.fullmatch(r"quay\.io/coreos/etcd:v3\.\d+\.\d+", images["milvus-etcd"])
    assert images["milvus-minio"].startswith("minio/minio:RELEASE.")
    assert images["postgres"].startswith("pgvector/pgvector:")
    for name in ("milvus", "milvus-etcd", "milvus-minio", "postgres"):
        assert compose_service(name).get("healthcheck"), f"{name} needs a healthcheck for depends_on"
        assert "ports" not in compose_service(name), f"{name} is reached inside the compose network only"


def test_milvus_points_at_its_etcd_and_object_storage() -> None:
    m = compose_service("milvus")
    env = compose_environment("milvus")
    assert m["command"] == ["milvus", "run", "standalone"]
    assert env["ETCD_ENDPOINTS"] == "milvus-etcd:2379" and env["MINIO_ADDRESS"] == "milvus-minio:9000"
    minio = compose_environment("milvus-minio")
    assert env["MINIO_ACCESS_KEY_ID"] == minio["MINIO_ROOT_USER"]
    assert env["MINIO_SECRET_ACCESS_KEY"] == minio["MINIO_ROOT_PASSWORD"] and "${" in env["MINIO_SECRET_ACCESS_KEY"]
    assert {d: c["condition"] for d, c in m["depends_on"].items()} == {
        "milvus-etcd": "service_healthy",
        "milvus-minio": "service_healthy",
    }
    assert "9091/healthz" in " ".join(m["healthcheck"]["test"])
    assert any(str(v).endswith(":/var/lib/milvus") for v in m["volumes"])
    for vol in ("milvus-etcd", "milvus-minio", "milvus-data"):
        assert vol in compose()["volumes"]


def test_replicas_use_milvus_and_the_shared_database(monkeypatch: pytest.MonkeyPatch) -> None:
    from service.config import Settings

    base = compose_service()
    for name in REPLICAS:
        replica = compose_service(name)
        assert replica["build"] == base["build"] and replica["image"] == base["image"]
        assert "ports" not in replica, "replicas are reached through the proxy only"
        for dep in ("postgres", "milvus"):
            assert replica["depends_on"][dep]["condition"] == "service_healthy"
        env = compose_environment(name)
        assert not {n for n in env if n.startswith("FACEREC_")} - df.known_variables()
        for key, value in env.items():
            monkeypatch.setenv(key, _fill(value))
        settings = Settings()
        assert settings.vector_engine == "milvus" and settings.milvus_uri == "http://milvus:19530"
        assert settings.database_url and "@postgres:5432/" in settings.database_url
        assert settings.milvus_index in ("HNSW", "HNSW_SQ", "IVF_SQ8", "DISKANN", "FLAT")
    bootstrap = [n for n in REPLICAS if compose_environment(n).get("FACEREC_BOOTSTRAP_ADMIN_KEY_FILE")]
    assert bootstrap == ["milvus-replica-a"], "exactly one replica creates the first key (two would race)"


def test_proxy_balances_exactly_the_replicas() -> None:
    proxy = compose_service("milvus-proxy")
    assert proxy["image"].startswith("nginx:")
    [port] = proxy["ports"]
    assert str(port).startswith("127.0.0.1:")
    mounts = [str(v).split(":") for v in proxy["volumes"]]
    assert any((ROOT / src).resolve() == NGINX_CONF for src, *_ in mounts)
    servers = re.findall(r"^\s*server\s+([\w.-]+):(\d+)", NGINX_CONF.read_text(), re.M)
    assert {h for h, _ in servers} == set(REPLICAS)
    assert {p for _, p in servers} == {compose_environment(REPLICAS[0])["FACEREC_PORT"]}
