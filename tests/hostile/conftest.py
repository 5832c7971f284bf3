"""One real server for the hostile-input tests (real weights, default limits), an admin key, and helpers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.service.server import Server, make_keys

MAX_UPLOAD = 10_485_760  # the defaults: the limits a deployment has unless it changes them
MAX_PIXELS = 40_000_000


@pytest.fixture(scope="package")
def admin_key(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    data = tmp_path_factory.mktemp("hostile") / "data"
    return data, make_keys(data, hostile="admin")["hostile"]


@pytest.fixture(scope="package")
def server(admin_key: tuple[Path, str], weights_path: Path) -> Iterator[Server]:
    env = {
        "FACEREC_MAX_UPLOAD_BYTES": str(MAX_UPLOAD),
        "FACEREC_MAX_PIXELS": str(MAX_PIXELS),
        "FACEREC_RATE_LIMIT_PER_MINUTE": "0",  # hundreds of requests a minute from one key, on purpose
        # fuzzed stream URLs are never opened: every POST /v1/streams is refused (409) before any connection
        "FACEREC_STREAMS_MAX": "0",
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
