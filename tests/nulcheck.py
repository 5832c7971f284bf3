"""NUL (U+0000) in every kind of request text, against a real server of any backend: each request is a 422
``validation_error`` in the envelope and changes nothing. PostgreSQL refuses NUL in text and JSON values, so
before the guard these were 500s on the shared backend while the embedded one stored them."""

from __future__ import annotations

import io
from typing import Any

import httpx
import numpy as np
from PIL import Image

from tests.hostile.conftest import gallery_state

VIDEO_BODY = (
    b'--zz\r\nContent-Disposition: form-data; name="video"; filename="clip\x00.mp4"\r\n\r\nnot a video\r\n--zz--\r\n'
)
"""An upload whose file name holds a raw NUL byte (httpx would escape it as ``%00``)."""


def _png() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.tile(np.arange(64, dtype=np.uint8), (48, 1))).convert("RGB").save(buf, "PNG")
    return buf.getvalue()


def check_nul_refused(c: httpx.Client) -> None:
    """Subject names, metadata values and keys, PATCH bodies, multipart fields, path parameters, query filters and
    an upload's file name, each with a NUL: 422 ``validation_error`` naming the rule, nothing changed."""
    sid = c.post("/v1/subjects", json={"name": "nul-target"}).json()["id"]
    try:
        before = gallery_state(c)
        image = _png()
        requests: list[tuple[str, str, dict[str, Any]]] = [
            ("POST", "/v1/subjects", {"json": {"name": "a\x00b"}}),
            ("POST", "/v1/subjects", {"json": {"name": "ok", "metadata": {"k": ["x", "a\x00b"]}}}),
            ("POST", "/v1/subjects", {"json": {"name": "ok", "metadata": {"k\x00": "v"}}}),
            ("PATCH", f"/v1/subjects/{sid}", {"json": {"name": "a\x00b"}}),
            ("PATCH", f"/v1/subjects/{sid}", {"json": {"metadata": {"nested": {"k": "\x00"}}}}),
            ("POST", "/v1/verify", {"files": {"image": ("p.png", image)}, "data": {"subject_id": "a\x00b"}}),
            ("POST", "/v1/verify", {"json": {"image_base64": "AAAA", "subject_id": "\x00"}}),
            ("GET", "/v1/subjects/a%00b", {}),
            ("GET", "/v1/subjects/a%00b/faces", {}),
            ("DELETE", "/v1/subjects/a%00b", {}),
            ("GET", "/v1/videos/a%00b", {}),
            ("GET", "/v1/events", {"params": {"source": "a\x00b"}}),
            ("GET", "/v1/subjects", {"params": {"cursor": "\x00"}}),
            (
                "POST",
                "/v1/videos",
                {"content": VIDEO_BODY, "headers": {"content-type": "multipart/form-data; boundary=zz"}},
            ),
        ]
        failures = []
        for method, path, kwargs in requests:
            r = c.request(method, path, **kwargs)
            body = r.json() if r.headers.get("content-type", "").startswith("application/json") else {}
            error = body.get("error", {}) if isinstance(body, dict) else {}
            if r.status_code != 422 or error.get("code") != "validation_error" or "NUL" not in error.get("message", ""):
                failures.append(
                    f"{method} {path} {kwargs.get('json') or kwargs.get('params') or ''}: "
                    f"{r.status_code} {r.text[:200]}"
                )
        assert not failures, "\n".join(failures)
        assert gallery_state(c) == before
    finally:
        assert c.delete(f"/v1/subjects/{sid}").status_code == 204
