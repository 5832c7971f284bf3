"""The OpenAPI document, built by the app itself (fake analyzer, no model): every endpoint documented with its
errors and an example body, and the form fields of the image routes taken from the parameter models."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from service.schemas import EmbedParams, EnrollParams, IdentifyParams, VerifyParams
from tests.service.fakes import FakeAnalyzer, app_with, local


def test_openapi_documents_every_endpoint(tmp_path: Path) -> None:
    with local(app_with(tmp_path, lambda s: FakeAnalyzer())) as admin:
        spec = admin.get("/openapi.json").json()
        docs = admin.get("/docs")
        redoc = admin.get("/redoc")
    assert docs.status_code == 200 and "swagger-ui" in docs.text
    assert redoc.status_code == 404, "a second docs UI, loading its script from a CDN"
    ops = [(path, method, op) for path, item in spec["paths"].items() for method, op in item.items()]
    assert {p for p, _, _ in ops} >= {
        "/v1/subjects",
        "/v1/subjects/{subject_id}",
        "/v1/subjects/{subject_id}/faces",
        "/v1/faces/{face_id}",
        "/v1/verify",
        "/v1/identify",
        "/v1/detect",
        "/v1/embed",
        "/healthz",
        "/readyz",
        "/metrics",
    }
    for path, method, op in ops:
        assert op.get("summary"), f"{method} {path} has no summary"
        if path.startswith("/v1/"):
            for status in ("401", "403"):
                assert status in op["responses"], f"{method} {path} does not document {status}"
                schema = op["responses"][status]["content"]["application/json"]["schema"]
                assert schema["$ref"].endswith("/ErrorResponse")
        if method in ("post", "patch"):
            content = op["requestBody"]["content"]
            assert any(
                "example" in c or "examples" in c or "examples" in c.get("schema", {}) for c in content.values()
            ) or _schema_has_example(spec, content), f"{method} {path}"


def _schema_has_example(spec: dict[str, Any], content: dict[str, Any]) -> bool:
    for c in content.values():
        ref = c.get("schema", {}).get("$ref", "")
        if ref and "examples" in spec["components"]["schemas"][ref.rsplit("/", 1)[1]]:
            return True
    return False


@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("/v1/verify", VerifyParams),
        ("/v1/identify", IdentifyParams),
        ("/v1/embed", EmbedParams),
        ("/v1/subjects/{subject_id}/faces", EnrollParams),
    ],
)
def test_form_fields_come_from_the_parameter_models(tmp_path: Path, path: str, params: Any) -> None:
    with local(app_with(tmp_path, lambda s: FakeAnalyzer())) as client:
        spec = client.get("/openapi.json").json()
    content = spec["paths"][path]["post"]["requestBody"]["content"]
    for media in ("multipart/form-data", "application/json"):
        fields = content[media]["schema"]["properties"]
        for name, field in params.model_fields.items():
            assert fields[name]["description"] == field.description, (path, name)
            if field.default is not None:
                assert fields[name]["default"] == field.default, (path, name)
    if params is IdentifyParams:
        top_k = content["multipart/form-data"]["schema"]["properties"]["top_k"]
        assert (top_k["type"], top_k["minimum"], top_k["maximum"]) == ("integer", 1, 100)
        threshold = content["multipart/form-data"]["schema"]["properties"]["threshold"]
        assert (threshold["type"], threshold["minimum"], threshold["maximum"]) == ("number", 0, 2)
