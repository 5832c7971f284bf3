"""One real server for the hostile-input tests (real weights, default limits), an admin key, and helpers.

Every test of the package runs against two servers in turn: on the embedded gallery (SQLite + FAISS in its data
dir) and on PostgreSQL + pgvector (a fresh database of the test run's cluster), since the shared backend refuses
input the embedded one stores (NUL in text, keys over its index's size) and must answer it the same way."""

from __future__ import annotations

import json
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from service.pgstores import open_postgres
from tests.pgfixtures import fresh_database
from tests.service.server import Server, make_keys

MAX_UPLOAD = 10_485_760  # the defaults: the limits a deployment has unless it changes them
MAX_PIXELS = 40_000_000


@pytest.fixture(scope="package", params=["embedded", "postgres"])
def backend_env(request: pytest.FixtureRequest) -> Iterator[dict[str, str]]:
    """The server's backend settings: none (embedded) or a fresh PostgreSQL database's URL."""
    if request.param == "embedded":
        yield {}
        return
    with fresh_database() as url:
        yield {"FACEREC_DATABASE_URL": url}


@pytest.fixture(scope="package")
def admin_key(tmp_path_factory: pytest.TempPathFactory, backend_env: dict[str, str]) -> tuple[Path, str]:
    data = tmp_path_factory.mktemp("hostile") / "data"
    if (url := backend_env.get("FACEREC_DATABASE_URL")) is None:
        return data, make_keys(data, hostile="admin")["hostile"]
    backend = open_postgres(url)
    try:
        return data, backend.keys.create(scope="admin", name="hostile")[1]
    finally:
        backend.close()


@pytest.fixture(scope="package")
def server(admin_key: tuple[Path, str], backend_env: dict[str, str], weights_path: Path) -> Iterator[Server]:
    env = {
        **backend_env,
        "FACEREC_MAX_UPLOAD_BYTES": str(MAX_UPLOAD),
        "FACEREC_MAX_PIXELS": str(MAX_PIXELS),
        "FACEREC_RATE_LIMIT_PER_MINUTE": "0",  # hundreds of requests a minute from one key, on purpose
        # fuzzed stream URLs are never opened: every POST /v1/streams is refused (409) before any connection
        "FACEREC_STREAMS_MAX": "0",
        "FACEREC_PHOTO_LIBRARY": "true",  # so that the library's endpoints are fuzzed past their 403
    }
    yield from Server(admin_key[0], env=env).serving()


@pytest.fixture(scope="package")
def admin(server: Server, admin_key: tuple[Path, str]) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, headers={"X-API-Key": admin_key[1]}, timeout=60.0) as c:
        yield c


def rss_mb(server: Server) -> float:
    """The server process's resident memory (VmRSS) in MB."""
    assert server.proc is not None
    for line in Path(f"/proc/{server.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")  # pragma: no cover


def assert_envelope(r: httpx.Response) -> dict[str, Any]:
    """An error response is exactly ``{"error": {"code", "message"}}`` with non-empty strings."""
    body = r.json()
    assert isinstance(body, dict) and set(body) == {"error"}, (r.status_code, r.text[:300])
    err = body["error"]
    assert isinstance(err, dict) and set(err) == {"code", "message"}, (r.status_code, r.text[:300])
    assert isinstance(err["code"], str) and err["code"], r.text[:300]
    assert isinstance(err["message"], str) and err["message"], r.text[:300]
    return err


def gallery_state(client: httpx.Client) -> list[dict[str, Any]]:
    """Every subject with its faces, as the API lists them (paginated through)."""
    out: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 500, **({"cursor": cursor} if cursor else {})}
        page = client.get("/v1/subjects", params=params)
        assert page.status_code == 200, page.text
        for subject in page.json()["items"]:
            faces = client.get(f"/v1/subjects/{subject['id']}/faces")
            assert faces.status_code == 200, faces.text
            out.append({**subject, "faces": faces.json()["items"]})
        cursor = page.json()["next_cursor"]
        if not cursor:
            return sorted(out, key=lambda s: s["id"])


def same_json(a: Any, b: Any) -> bool:
    """``a`` and ``b`` are the same JSON value: numbers compared by value whatever their spelling (PostgreSQL's
    ``jsonb`` returns ``1e308`` as the integer ``1000...0``), object keys in any order (docs/API.md, Subjects)."""

    def exact(value: Any) -> Any:
        return json.loads(json.dumps(value), parse_float=Decimal, parse_int=Decimal)

    return bool(exact(a) == exact(b))
