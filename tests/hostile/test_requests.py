"""Malformed requests (content types, fields, base64, JSON) and hostile names and metadata, on a real server.

Every answer is a 4xx in the envelope or, for names and metadata, the value stored and returned byte-exact;
never a 5xx; the gallery is unchanged by every refused request.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.hostile.conftest import MAX_UPLOAD, assert_envelope, gallery_state, same_json
from tests.nulcheck import check_nul_refused

pytestmark = pytest.mark.slow

IMAGE_PATHS = ("/v1/detect", "/v1/embed", "/v1/identify", "/v1/verify", "/v1/subjects/{sid}/faces")
JSON = {"content-type": "application/json"}
MP = {"content-type": "multipart/form-data; boundary=zz"}
V, IMG, U = {(422, "validation_error")}, {(422, "invalid_image")}, {(415, "unsupported_media_type")}
VI = V | IMG


@pytest.fixture(scope="module")
def subject(admin: httpx.Client) -> Iterator[str]:
    r = admin.post("/v1/subjects", json={"name": "target", "metadata": {}})
    assert r.status_code == 201, r.text
    yield r.json()["id"]
    admin.delete(f"/v1/subjects/{r.json()['id']}")


def many_files(n: int) -> list[tuple[str, tuple[str, bytes]]]:
    return [("images", (f"{i}.bin", b"x")) for i in range(n)]


UNTERMINATED = b'--zz\r\nContent-Disposition: form-data; name="image"; filename="a"\r\n\r\nabc'
DEEP = b'{"a":' + b"[" * 200_000 + b"]" * 200_000 + b"}"

# (label, httpx kwargs, allowed (status, code) pairs)
MALFORMED: list[tuple[str, dict[str, Any], set[tuple[int, str]]]] = [
    ("no content type", {"content": b"\xff\xd8\xff"}, U),
    ("text/plain", {"content": b"hello", "headers": {"content-type": "text/plain"}}, U),
    ("image/jpeg body", {"content": b"\xff\xd8\xff", "headers": {"content-type": "image/jpeg"}}, U),
    ("urlencoded", {"data": {"image": "abc"}}, U),
    ("xml", {"content": b"<a/>", "headers": {"content-type": "application/xml"}}, U),
    ("multipart no boundary", {"content": b"--x\r\n", "headers": {"content-type": "multipart/form-data"}}, V),
    ("multipart garbage", {"content": b"\x00" * 1000, "headers": MP}, V),
    ("multipart unterminated", {"content": UNTERMINATED, "headers": MP}, VI),
    ("multipart no image", {"files": {"other": ("a.bin", b"x")}, "data": {"top_k": "3"}}, V),
    ("multipart fields only", {"data": {"threshold": "1.0"}, "files": {}}, V | U),
    ("too many files", {"files": many_files(150)}, V | {(413, "payload_too_large")}),
    ("image as text field", {"data": {"image": "a file?", "image_a": "x"}, "files": {"z": ("z", b"")}}, V),
    ("json empty", {"content": b"", "headers": JSON}, V),
    ("json null", {"content": b"null", "headers": JSON}, V),
    ("json list", {"content": b"[1,2]", "headers": JSON}, V),
    ("json string", {"content": b'"image"', "headers": JSON}, V),
    ("json broken", {"content": b'{"image_base64": "', "headers": JSON}, V),
    ("json not utf-8", {"content": b'{"image_base64": "\xff\xfe"}', "headers": JSON}, V),
    ("json {}", {"json": {}}, V),
    ("json deep", {"content": DEEP, "headers": JSON}, V),
    ("json huge int", {"content": b'{"top_k":' + b"9" * 100_000 + b"}", "headers": JSON}, V),
    ("json NaN threshold", {"content": b'{"image_base64":"AAAA","threshold":NaN}', "headers": JSON}, VI),
    ("json over the limit", {"json": {"image_base64": "A" * (MAX_UPLOAD + 10)}}, {(413, "payload_too_large")}),
    ("base64 garbage", {"json": {"image_base64": "!!!! not base64 ####"}}, IMG),
    ("base64 padding only", {"json": {"image_base64": "===="}}, IMG),
    ("base64 unicode", {"json": {"image_base64": "\u202e\U0001f600\u0000"}}, IMG),
    ("base64 of text", {"json": {"image_base64": base64.b64encode(b"hello world").decode()}}, VI),
    ("base64 data url garbage", {"json": {"image_base64": "data:image/png;base64,@@@"}}, IMG),
    ("base64 data url no comma", {"json": {"image_base64": "data:image/png;base64"}}, IMG),
    ("base64 number", {"json": {"image_base64": 12345}}, V),
    ("base64 null", {"json": {"image_base64": None}}, V),
    ("base64 object", {"json": {"image_base64": {"a": 1}}}, V),
    ("base64 nested list", {"json": {"image_base64": [["AAAA"]]}}, V),
    ("base64 list of 101", {"json": {"images_base64": ["AAAA"] * 101}}, V),  # the multipart limit, as JSON
    ("base64 list of 1000", {"json": {"images_base64": ["AAAA"] * 1000, "image_base64": ["AAAA"] * 1000}}, VI),
    ("bad top_k", {"json": {"image_base64": "AAAA", "top_k": -1, "threshold": "x", "face": "all"}}, VI),
]  # fmt: skip


@pytest.mark.parametrize("path", IMAGE_PATHS)
def test_malformed_requests_are_4xx_in_the_envelope(admin: httpx.Client, subject: str, path: str) -> None:
    before = gallery_state(admin)
    url = path.format(sid=subject)
    failures = []
    for label, kw, allowed in MALFORMED:
        r = admin.post(url, **kw)
        assert r.status_code < 500, (label, r.status_code, r.text[:300])
        if url.endswith("/faces") and r.status_code == 200:  # enrolment lists per-image failures
            body = r.json()
            if body["faces"] or not body["rejected"]:
                failures.append(f"{label}: {r.text[:200]}")
            continue
        err = assert_envelope(r)
        if (r.status_code, err["code"]) not in allowed:
            failures.append(f"{label}: {r.status_code} {r.text[:200]}")
    assert not failures, "\n".join(failures)
    assert gallery_state(admin) == before


NAMES = [
    "\u202eevil\u202c \u05e9\u05dc\u05d5\u05dd \u0645\u0631\u062d\u0628\u0627",  # RTL override, Hebrew, Arabic
    "\U0001f600\U0001f469\u200d\U0001f469\u200d\U0001f467 \U0001f1fa\U0001f1f3",  # emoji, ZWJ sequence, flag
    "Z\u0351\u0361\u0325a\u0336\u0358l\u0335g\u0334o\u0338",  # combining marks
    "nul\x00in\x00the\x00middle",
    "'; DROP TABLE subjects; --",
    "Robert'); DELETE FROM faces WHERE ('1'='1",
    '" OR 1=1 -- \\ % _ *',
    "<script>alert(1)</script>",
    "../../etc/passwd",
    "\t\r\n ",
    "x" * 200,
    "\ufeff\ufffe\uffff",
]
METADATA: list[Any] = [
    {"'; DROP TABLE subjects; --": "1' OR '1'='1", "\x00": "\x00"},
    {"rtl": "\u202e\u05d0", "emoji": "\U0001f600" * 1000, "combining": "e\u0301" * 1000},
    {"nested": {"a": [1, 2.5, None, True, False, {"b": [[], {}, ""]}]}},
    {"deep": json.loads('{"a":' * 30 + "1" + "}" * 30)},
    {"big": "v" * 1_000_000},
    {"many": {str(i): i for i in range(20_000)}},
    {"numbers": [0, -0, 1e308, -1e-308, 2**53, -(2**63), 2**64, 0.1]},
]


def test_hostile_names_are_stored_exactly_or_refused(admin: httpx.Client) -> None:
    before = gallery_state(admin)
    created = []
    try:
        for name in NAMES:
            r = admin.post("/v1/subjects", json={"name": name, "metadata": {"name": name}})
            assert r.status_code < 500, (name, r.status_code, r.text[:300])
            if r.status_code != 201:
                assert_envelope(r)
                continue
            created.append(r.json()["id"])
            got = admin.get(f"/v1/subjects/{created[-1]}").json()
            assert (got["name"], got["metadata"]) == (name, {"name": name}), name
            listed = {s["id"]: s for s in gallery_state(admin)}[created[-1]]
            assert listed["name"] == name
        too_long = admin.post("/v1/subjects", json={"name": "x" * 201})
        assert too_long.status_code == 422 and assert_envelope(too_long)["code"] == "validation_error"
    finally:
        for sid in created:
            assert admin.delete(f"/v1/subjects/{sid}").status_code == 204
    assert gallery_state(admin) == before


@pytest.mark.parametrize("metadata", METADATA, ids=lambda m: next(iter(m)))
def test_hostile_metadata_is_stored_exactly_or_refused(admin: httpx.Client, metadata: Any) -> None:
    r = admin.post("/v1/subjects", json={"name": "meta", "metadata": metadata})
    assert r.status_code < 500, r.text[:300]
    if r.status_code != 201:
        assert r.status_code in (413, 422), r.text[:300]
        assert_envelope(r)
        return
    sid = r.json()["id"]
    try:
        assert same_json(r.json()["metadata"], metadata)
        assert same_json(admin.get(f"/v1/subjects/{sid}").json()["metadata"], metadata)
        patched = admin.patch(f"/v1/subjects/{sid}", json={"metadata": metadata, "name": "meta2"})
        assert patched.status_code == 200 and same_json(patched.json()["metadata"], metadata), patched.text[:300]
    finally:
        assert admin.delete(f"/v1/subjects/{sid}").status_code == 204


def raw_post(admin: httpx.Client, body: bytes) -> httpx.Response:
    return admin.post("/v1/subjects", content=body, headers=JSON)


def check_refused_and_unchanged(admin: httpx.Client, body: bytes, codes: set[str]) -> None:
    before = gallery_state(admin)
    r = raw_post(admin, body)
    assert r.status_code < 500, r.text[:300]
    assert r.status_code == 422 and assert_envelope(r)["code"] in codes, r.text[:300]
    assert gallery_state(admin) == before


def test_huge_and_broken_json_bodies_are_refused(admin: httpx.Client) -> None:
    before = gallery_state(admin)
    big = admin.post("/v1/subjects", json={"name": "big", "metadata": {"k": "v" * (MAX_UPLOAD + 1)}})
    assert big.status_code == 413 and assert_envelope(big)["code"] == "payload_too_large", big.text[:300]
    for body in (b'{"name": "a", "metadata": ', b"\xff\xfe{}", b'{"name": 5}', b'{"name": "a", "metadata": []}'):
        r = raw_post(admin, body)
        assert r.status_code == 422 and assert_envelope(r)["code"] == "validation_error", (body, r.text[:300])
    assert gallery_state(admin) == before


@pytest.mark.parametrize(
    "body",
    [
        b'{"name": "a", "metadata": {"a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}}",
        b'{"name": "a", "metadata": {"n": ' + b"9" * 5000 + b"}}",
    ],
    ids=["nested-100000", "int-5000-digits"],
)
def test_unparseable_json_is_a_422(admin: httpx.Client, body: bytes) -> None:
    check_refused_and_unchanged(admin, body, {"validation_error"})


@pytest.mark.parametrize("depth", [300, 900])
def test_deeply_nested_metadata_is_refused_not_stored(admin: httpx.Client, depth: int) -> None:
    body = '{"name": "deep", "metadata": ' + '{"a":' * depth + "1" + "}" * depth + "}"
    check_refused_and_unchanged(admin, body.encode(), {"validation_error"})


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e400"])
def test_non_finite_numbers_in_metadata_are_refused(admin: httpx.Client, literal: str) -> None:
    check_refused_and_unchanged(
        admin, b'{"name": "nan", "metadata": {"x": %s}}' % literal.encode(), {"validation_error"}
    )


def test_lone_surrogates_in_metadata_are_refused(admin: httpx.Client) -> None:
    check_refused_and_unchanged(admin, b'{"name": "s", "metadata": {"\\udfff": "\\ud800"}}', {"validation_error"})


def test_nul_in_any_request_text_is_a_422(admin: httpx.Client) -> None:
    check_nul_refused(admin)  # the same check runs on PostgreSQL (tests/postgres/test_replicas_http.py)


BAD_CURSORS = [
    "nope",
    "9" * 30,
    "9" * 5000,
    "\u00b2",
    "\u0663",
    "-1",
    "1.5",
    "1e3",
    " 1",
    "1_",
    "_ab",
    "1765000000.0_XYZ",
]
"""Cursors the server never issues: not ASCII digits (``²`` and ``٣`` pass ``str.isdigit``), past a 64-bit
column, signed, spaced, malformed keyset cursors."""


@pytest.mark.parametrize("path", ["/v1/events", "/v1/videos", "/v1/subjects"])
def test_cursors_the_server_did_not_issue_are_422(admin: httpx.Client, path: str) -> None:
    for cursor in BAD_CURSORS:
        r = admin.get(path, params={"cursor": cursor})
        assert r.status_code == 422 and assert_envelope(r)["code"] == "validation_error", (cursor, r.text[:300])
    assert admin.get(path).status_code == 200


@pytest.mark.parametrize("path", ["/v1/subjects/{}", "/v1/videos/{}", "/v1/photos/{}", "/v1/streams/{}"])
def test_a_long_unknown_id_is_not_echoed_in_full(admin: httpx.Client, path: str) -> None:
    r = admin.get(path.format("a" * 5000))
    assert r.status_code == 404, r.text[:300]
    message = assert_envelope(r)["message"]
    assert len(message) < 600 and "cut: " in message, message


@pytest.mark.parametrize("moment", ["0001-01-01", "0001-01-01T00:00:00", "9999-12-31T23:59:59", "1970-01-01"])
def test_event_times_at_the_ends_of_the_calendar_are_answered(admin: httpx.Client, moment: str) -> None:
    for name in ("since", "until"):  # a time without a zone went through the server's local time: year 0, a 500
        r = admin.get("/v1/events", params={name: moment})
        assert r.status_code == 200, (name, moment, r.text[:300])
