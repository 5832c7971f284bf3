"""Property-based fuzzing of the whole API from its OpenAPI schema (schemathesis), against the real server.

Every operation gets schema-valid (positive) and schema-violating (negative) requests, sent with an admin key.
Properties: never a 5xx; every 4xx is the ``{"error": {"code", "message"}}`` envelope; status codes, content
types and bodies conform to the schema. Bounded: a fixed number of examples per operation and mode (derandomised,
no shrinking), so the whole test takes well under a minute.
"""

from __future__ import annotations

import time
import zlib
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.hostile.conftest import assert_envelope
from tests.service.server import Server

try:  # the `dev` extra
    import schemathesis
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis.errors import Unsatisfiable
    from schemathesis import GenerationMode
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import (
        content_type_conformance,
        response_schema_conformance,
        status_code_conformance,
    )
except ImportError:  # pragma: no cover
    pytest.skip("schemathesis is not installed: pip install -e '.[dev]'", allow_module_level=True)

pytestmark = pytest.mark.slow

EXAMPLES = {GenerationMode.POSITIVE: 200, GenerationMode.NEGATIVE: 100}
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


class Target:
    """A real subject that fuzzed path parameters sometimes point at; made again when a fuzzed DELETE erases it."""

    def __init__(self, admin: httpx.Client) -> None:
        self.admin = admin
        self.renew()

    def renew(self) -> None:
        r = self.admin.post("/v1/subjects", json={"name": "fuzz target", "metadata": {"k": "v"}})
        assert r.status_code == 201, r.text
        self.id: str = r.json()["id"]


def fuzz_operation(
    operation: Any, mode: GenerationMode, examples: int, base_url: str, key: dict[str, str], target: Target
) -> dict[int, int]:
    """Send ``examples`` generated requests for ``operation``; returns how often each status came back."""
    statuses: dict[int, int] = {}

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=examples,
        deadline=None,
        derandomize=True,
        database=None,
        phases=[Phase.explicit, Phase.generate],  # no shrinking: the report names the request as sent
        suppress_health_check=list(HealthCheck),
    )
    def fuzz(case: Any) -> None:
        if case.path_parameters and "subject_id" in case.path_parameters and zlib.crc32(repr(case).encode()) % 3 == 0:
            case.path_parameters["subject_id"] = target.id  # sometimes a subject that exists
        response = case.call(base_url=base_url, headers=key, timeout=30)
        statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
        if case.method == "DELETE" and (case.path_parameters or {}).get("subject_id") == target.id:
            target.renew()
        case.validate_response(response, checks=CHECKS, headers=key)
        if response.status_code >= 400:
            assert_envelope(httpx.Response(response.status_code, content=response.content))

    fuzz()
    return statuses


def test_fuzz_every_operation_from_the_openapi_schema(
    server: Server, admin_key: tuple[Path, str], admin: httpx.Client
) -> None:
    key = {"X-API-Key": admin_key[1]}
    target = Target(admin)
    schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json")
    results: list[Any] = list(schema.get_all_operations())
    operations = [result.ok() for result in results]  # raises on an operation the schema does not describe well
    assert len(operations) >= 16
    started = time.monotonic()
    failures: list[str] = []
    seen: dict[str, dict[int, int]] = {}
    for operation in operations:
        for mode, examples in EXAMPLES.items():
            try:
                seen[f"{operation.label} {mode.value}"] = fuzz_operation(
                    operation, mode, examples, server.url, key, target
                )
            except Unsatisfiable:  # negative mode on an operation with nothing to break (GET /healthz)
                continue
            except (Exception, BaseExceptionGroup) as exc:  # a report for every failing operation, not the first
                failures.append(f"{operation.label} ({mode.value}): {exc}")
    took = time.monotonic() - started
    print(f"\nfuzzed {len(operations)} operations in {took:.1f}s")
    for label, statuses in seen.items():
        print(f"  {label}: {dict(sorted(statuses.items()))}")
    assert not failures, "\n\n".join(failures)


@pytest.mark.parametrize("cursor", ["zzz", "s", "\u00e9\U0001f600", "'; DROP TABLE subjects; --"])
def test_an_invalid_cursor_is_a_422(admin: httpx.Client, cursor: str) -> None:
    with httpx.Client(base_url=str(admin.base_url), headers=admin.headers) as fresh:  # a 500 drops the connection
        r = fresh.get("/v1/subjects", params={"cursor": cursor})
    assert r.status_code == 422, r.text
    assert assert_envelope(r)["code"] == "validation_error"


@pytest.mark.parametrize("method", ["GET", "DELETE"])
def test_a_face_id_over_int64_is_a_4xx(admin: httpx.Client, method: str) -> None:
    with httpx.Client(base_url=str(admin.base_url), headers=admin.headers) as fresh:  # a 500 drops the connection
        r = fresh.request(method, f"/v1/faces/{2**63}")
    assert r.status_code in (404, 422), r.text
    assert_envelope(r)
