"""The CLI's backend for a running facerec server: the REST API over HTTP with an API key."""

from __future__ import annotations

import time
from typing import IO, Any
from urllib.parse import quote

import httpx

from service.addresses import redact_url
from service.commands.errors import CliError


def subject_path(subject_id: str, rest: str = "") -> str:
    """``/v1/subjects/<id><rest>`` with the id percent-encoded: an id is one path segment, so ``x?y`` cannot
    reach another route. No id has a ``/`` (the server decodes ``%2F`` before routing, so ``DELETE <id>/photos``
    would erase the subject's photo faces whatever the encoding)."""
    if subject_id in ("", ".", "..") or "/" in subject_id:
        raise CliError(f"no subject with id {subject_id!r}")
    return f"/v1/subjects/{quote(subject_id, safe='')}{rest}"


class RemoteBackend:
    """Talks to a running facerec server with an API key.

    A ``429`` (rate limited or overloaded) is retried after the server's ``Retry-After`` seconds, up to
    ``max_wait_s`` in all per call, so a bulk enrolment paces itself to the server instead of failing.
    """

    def __init__(self, url: str, api_key: str | None, *, timeout: float = 120.0, max_wait_s: float = 300.0) -> None:
        headers = {"X-API-Key": api_key} if api_key else {}
        self.shown_url = redact_url(url)
        try:
            self.client = httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=timeout)
        except httpx.InvalidURL as exc:
            raise CliError(f"--server {self.shown_url}: not a valid URL ({exc})") from None
        self.max_wait_s = max_wait_s
        self._sleep = time.sleep

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        waited = 0.0
        while True:
            response = self.client.request(method, path, **kwargs)
            if response.status_code != 429 or waited >= self.max_wait_s:
                return response
            try:
                delay = max(float(response.headers.get("Retry-After", "1")), 0.1)
            except ValueError:
                delay = 1.0
            delay = min(delay, self.max_wait_s - waited)
            self._sleep(delay)
            waited += delay

    def close(self) -> None:
        self.client.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self._checked(method, path, **kwargs)
        return response.json() if response.content else None

    def _checked(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """The response of a call that succeeded; :class:`CliError` with the server's error otherwise."""
        try:
            response = self._request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise CliError(f"cannot reach {self.shown_url}: {exc}") from exc
        if response.status_code >= 400:
            code = "http_error"
            try:
                err = response.json()["error"]
                detail = f"{err['code']}: {err['message']}"
                code = str(err["code"])
            except (ValueError, KeyError, TypeError):
                detail = response.text[:200]
            raise CliError(
                f"{method} {path} -> {response.status_code} {detail}", status=response.status_code, code=code
            )
        return response

    def all_subjects(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        cursor: str | None = None
        while True:
            params: dict[str, Any] = {"limit": 500, **({"cursor": cursor} if cursor else {})}
            page = self._call("GET", "/v1/subjects", params=params)
            out.extend(page["items"])
            cursor = page["next_cursor"]
            if not cursor:
                return out

    def get_subject(self, subject_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self._call("GET", subject_path(subject_id))
        return result

    def create_subject(self, name: str) -> dict[str, Any]:
        result: dict[str, Any] = self._call("POST", "/v1/subjects", json={"name": name, "metadata": {}})
        return result

    def delete_subject(self, subject_id: str, *, erase_photo_faces: bool = False) -> None:
        params = {"erase_photo_faces": "true"} if erase_photo_faces else {}
        self._call("DELETE", subject_path(subject_id), params=params)

    def export_subject(self, subject_id: str, out: IO[bytes]) -> dict[str, int]:
        """The server's ZIP of the subject (``GET /v1/subjects/{id}/export``) written to ``out``; its counts."""
        import io
        import json
        import zipfile

        data = self._checked("GET", subject_path(subject_id, "/export")).content
        out.write(data)
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            counts: dict[str, int] = json.loads(z.read("manifest.json"))["counts"]
        return counts

    def list_faces(self, subject_id: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self._call("GET", subject_path(subject_id, "/faces"))["items"]
        return items

    def enroll(self, subject_id: str, images: list[bytes], *, largest: bool) -> dict[str, Any]:
        files = [("images", (f"{i}.jpg", data, "application/octet-stream")) for i, data in enumerate(images)]
        data = {"face": "largest" if largest else "single"}
        result: dict[str, Any] = self._call("POST", subject_path(subject_id, "/faces"), files=files, data=data)
        return result

    def identify(self, image: bytes, *, threshold: float | None, top_k: int | None) -> dict[str, Any]:
        data = {k: str(v) for k, v in (("threshold", threshold), ("top_k", top_k)) if v is not None}
        files = {"image": ("image", image, "application/octet-stream")}
        result: dict[str, Any] = self._call("POST", "/v1/identify", files=files, data=data)
        return result

    def verify(self, image_a: bytes, image_b: bytes, *, threshold: float | None) -> dict[str, Any]:
        data = {"threshold": str(threshold)} if threshold is not None else {}
        files = {
            "image_a": ("a", image_a, "application/octet-stream"),
            "image_b": ("b", image_b, "application/octet-stream"),
        }
        result: dict[str, Any] = self._call("POST", "/v1/verify", files=files, data=data)
        return result
