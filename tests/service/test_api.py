"""The REST API against a real server with keys: the auth scope matrix, the error envelope, enrolment rules,
inputs as multipart or base64 JSON, metrics and the OpenAPI document."""

from __future__ import annotations

import base64
import hashlib
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from service.keys import KeyStore
from tests.service.helpers import images, png, side_by_side
from tests.service.server import Server, free_port, make_keys, run_serve

pytestmark = pytest.mark.slow

MAX_UPLOAD = 1_000_000
MAX_PIXELS = 4_000_000


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    data = tmp_path_factory.mktemp("api") / "data"
    tokens = make_keys(data, admin="admin", recognize="recognize", revoked="admin", revoke=("revoked",))
    return {"data": data, **tokens}


@pytest.fixture(scope="module")
def server(keys: dict[str, Any], dataset: Path) -> Iterator[Server]:
    env = {"FACEREC_MAX_UPLOAD_BYTES": str(MAX_UPLOAD), "FACEREC_MAX_PIXELS": str(MAX_PIXELS)}
    yield from Server(keys["data"], env=env).serving()


@pytest.fixture(scope="module")
def admin(server: Server, keys: dict[str, Any]) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, headers={"X-API-Key": keys["admin"]}, timeout=60.0) as c:
        yield c


@pytest.fixture(scope="module")
def face(dataset: Path) -> bytes:
    return images(dataset, "val", "ben_afflek")[0].read_bytes()


def error(r: httpx.Response, status: int, code: str) -> str:
    """Assert the envelope and return its message."""
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, body
    assert body["error"]["code"] == code, body
    assert body["error"]["message"]
    message: str = body["error"]["message"]
    return message


# ---- auth --------------------------------------------------------------------------------------------


def test_scope_matrix(server: Server, keys: dict[str, Any], admin: httpx.Client, face: bytes) -> None:
    subject = admin.post("/v1/subjects", json={"name": "matrix"}).json()
    enrol = admin.post(f"/v1/subjects/{subject['id']}/faces", files={"images": face}).json()
    face_id = enrol["faces"][0]["id"]
    sid = subject["id"]
    recognize_ops: list[tuple[str, str, dict[str, Any]]] = [
        ("POST", "/v1/detect", {"files": {"image": face}}),
        ("POST", "/v1/identify", {"files": {"image": face}}),
        ("POST", "/v1/verify", {"files": {"image_a": face, "image_b": face}}),
        ("POST", "/v1/verify", {"files": {"image": face}, "data": {"subject_id": sid}}),
    ]
    admin_ops: list[tuple[str, str, dict[str, Any]]] = [
        ("POST", "/v1/subjects", {"json": {"name": "x"}}),
        ("GET", "/v1/subjects", {}),
        ("GET", f"/v1/subjects/{sid}", {}),
        ("PATCH", f"/v1/subjects/{sid}", {"json": {"metadata": {"k": 1}}}),
        ("GET", f"/v1/subjects/{sid}/faces", {}),
        ("POST", f"/v1/subjects/{sid}/faces", {"files": {"images": face}}),
        ("GET", f"/v1/faces/{face_id}", {}),
        ("POST", "/v1/embed", {"files": {"image": face}}),
        ("DELETE", f"/v1/faces/{face_id}", {}),
        ("DELETE", f"/v1/subjects/{sid}", {}),
    ]
    with httpx.Client(base_url=server.url, timeout=60.0) as anon:

        def call(key: str | None, method: str, path: str, kw: dict[str, Any]) -> httpx.Response:
            headers = {"X-API-Key": key} if key is not None else {}
            return anon.request(method, path, headers=headers, **kw)

        for method, path, kw in recognize_ops + admin_ops:
            error(call(None, method, path, kw), 401, "unauthorized")
            error(call("frk_nope_nope", method, path, kw), 401, "unauthorized")
            error(call(keys["revoked"], method, path, kw), 401, "unauthorized")
            error(call(keys["admin"] + "x", method, path, kw), 401, "unauthorized")
        for method, path, kw in recognize_ops:
            assert call(keys["recognize"], method, path, kw).status_code == 200, path
            assert call(keys["admin"], method, path, kw).status_code == 200, path
        for method, path, kw in admin_ops:
            error(call(keys["recognize"], method, path, kw), 403, "forbidden")
        expected = [201, 200, 200, 200, 200, 200, 200, 200, 204, 204]
        for (method, path, kw), status in zip(admin_ops, expected, strict=True):
            r = call(keys["admin"], method, path, kw)
            # the enrol repeats an image already stored: 200 with a duplicate rejection
            assert r.status_code == status, f"{method} {path}: {r.status_code} {r.text}"
        for path in ("/healthz", "/readyz", "/metrics", "/docs", "/openapi.json", "/"):
            assert anon.get(path).status_code == 200, path


def test_a_key_revoked_while_serving_is_refused_at_once(server: Server, keys: dict[str, Any], face: bytes) -> None:
    store = KeyStore(keys["data"])
    key, token = store.create(scope="recognize", name="temp")
    try:
        headers = {"X-API-Key": token}
        assert httpx.post(f"{server.url}/v1/detect", files={"image": face}, headers=headers).status_code == 200
        store.revoke(key.id)
        r = httpx.post(f"{server.url}/v1/detect", files={"image": face}, headers=headers)
        error(r, 401, "unauthorized")
    finally:
        store.close()


def test_keys_are_stored_hashed(keys: dict[str, Any]) -> None:
    raw = (keys["data"] / "keys.db").read_bytes()
    for name in ("admin", "recognize", "revoked"):
        assert keys[name].encode() not in raw
        assert keys[name].split("_", 2)[2].encode() not in raw
        assert hashlib.sha256(keys[name].encode()).hexdigest().encode() in raw


def test_refuses_a_public_address_without_keys(tmp_path: Path) -> None:
    done = run_serve("--host", "0.0.0.0", "--port", str(free_port()), "--data", str(tmp_path / "empty"))
    assert done.returncode == 2
    assert "refusing to listen on 0.0.0.0" in done.stderr and "keys create" in done.stderr


def test_a_second_server_on_the_same_data_dir_refuses(server: Server, keys: dict[str, Any]) -> None:
    done = run_serve("--port", str(free_port()), "--data", str(keys["data"]))
    assert done.returncode != 0
    assert "is in use by another facerec process" in done.stderr + done.stdout
    assert server.proc is not None and server.proc.poll() is None  # the first one is unharmed
    assert httpx.get(f"{server.url}/readyz").status_code == 200


# ---- the error envelope ----------------------------------------------------------------------------------


def test_bad_images(admin: httpx.Client) -> None:
    msg = error(admin.post("/v1/identify", files={"image": ("e.jpg", b"", "image/jpeg")}), 422, "invalid_image")
    assert "empty" in msg
    error(
        admin.post("/v1/detect", files={"image": ("a.txt", b"hello world", "text/plain")}),
        422,
        "invalid_image",
    )
    error(admin.post("/v1/detect", json={"image_base64": "not base64!"}), 422, "invalid_image")
    error(
        admin.post("/v1/detect", content=b"hello", headers={"content-type": "text/plain"}),
        415,
        "unsupported_media_type",
    )
    big = png(2500, 2000)  # 5 MP: over the pixel limit, far under the byte limit
    assert len(big) < MAX_UPLOAD
    error(admin.post("/v1/detect", files={"image": big}), 413, "payload_too_large")


def test_upload_limit(admin: httpx.Client, server: Server) -> None:
    blob = b"\0" * (MAX_UPLOAD + 1)
    msg = error(admin.post("/v1/detect", files={"image": ("big.jpg", blob, "image/jpeg")}), 413, "payload_too_large")
    assert "FACEREC_MAX_UPLOAD_BYTES" in msg

    def chunks() -> Iterator[bytes]:  # a valid multipart stream with no Content-Length: counted as it comes
        yield b'--x\r\nContent-Disposition: form-data; name="image"; filename="a.jpg"\r\n\r\n'
        for _ in range(MAX_UPLOAD // 65536 + 2):
            yield b"\0" * 65536
        yield b"\r\n--x--\r\n"

    r = admin.post("/v1/detect", content=chunks(), headers={"content-type": "multipart/form-data; boundary=x"})
    error(r, 413, "payload_too_large")
    assert admin.get("/healthz").status_code == 200


def test_validation_and_not_found(admin: httpx.Client, face: bytes) -> None:
    error(admin.post("/v1/identify", data={"top_k": "3"}, files={"other": face}), 422, "validation_error")
    error(admin.post("/v1/identify", files={"image": face}, data={"top_k": "0"}), 422, "validation_error")
    error(admin.post("/v1/verify", files={"image_a": face}), 422, "validation_error")
    error(admin.post("/v1/subjects", json={"metadata": {}}), 422, "validation_error")
    error(
        admin.post("/v1/subjects", content=b"{", headers={"content-type": "application/json"}),
        422,
        "validation_error",
    )
    error(admin.get("/v1/subjects/nope"), 404, "not_found")
    error(admin.patch("/v1/subjects/nope", json={"name": "x"}), 404, "not_found")
    error(admin.delete("/v1/subjects/nope"), 404, "not_found")
    error(admin.post("/v1/subjects/nope/faces", files={"images": face}), 404, "not_found")
    error(admin.post("/v1/verify", files={"image": face}, data={"subject_id": "nope"}), 404, "not_found")
    error(admin.get("/v1/faces/999999"), 404, "not_found")
    empty = admin.post("/v1/subjects", json={"name": "nobody yet"}).json()["id"]
    msg = error(admin.post("/v1/verify", files={"image": face}, data={"subject_id": empty}), 422, "no_face")
    assert "no enrolled faces" in msg
    error(admin.delete("/v1/faces/999999"), 404, "not_found")
    error(admin.get("/v1/nothing-here"), 404, "not_found")
    error(admin.put("/v1/subjects", json={}), 405, "method_not_allowed")


def test_no_face(admin: httpx.Client, face: bytes) -> None:
    blank = png(300, 300)
    assert admin.post("/v1/identify", files={"image": blank}).json()["faces"] == []
    assert admin.post("/v1/detect", files={"image": blank}).json()["faces"] == []
    error(admin.post("/v1/verify", files={"image_a": blank, "image_b": face}), 422, "no_face")


# ---- enrolment rules ------------------------------------------------------------------------------------


def test_enrolment_rejects_per_image(admin: httpx.Client, dataset: Path) -> None:
    ben = images(dataset, "val", "ben_afflek")
    two = side_by_side(ben[1], images(dataset, "val", "elton_john")[0])
    sid = admin.post("/v1/subjects", json={"name": "rules"}).json()["id"]
    files: list[tuple[str, tuple[str, bytes] | tuple[str, bytes, str]]] = [
        ("images", ("a.jpg", ben[1].read_bytes(), "image/jpeg")),
        ("images", ("blank.png", png(200, 200))),
        ("images", ("two.jpg", two)),
        ("images", ("again.jpg", ben[1].read_bytes())),
        ("images", ("junk.jpg", b"junk")),
    ]
    r = admin.post(f"/v1/subjects/{sid}/faces", files=files)
    assert r.status_code == 201, r.text
    body = r.json()
    assert len(body["faces"]) == 1
    assert {(x["index"], x["code"]) for x in body["rejected"]} == {
        (1, "no_face"),
        (2, "multiple_faces"),
        (3, "duplicate"),
        (4, "invalid_image"),
    }
    # a later call with the same bytes: duplicate, pointing at the stored face
    again = admin.post(f"/v1/subjects/{sid}/faces", files={"images": ben[1].read_bytes()})
    assert again.status_code == 200
    assert again.json()["rejected"] == [
        {
            "index": 0,
            "code": "duplicate",
            "message": again.json()["rejected"][0]["message"],
            "face_id": body["faces"][0]["id"],
        }
    ]
    largest = admin.post(f"/v1/subjects/{sid}/faces", files={"images": two}, data={"face": "largest"})
    assert largest.status_code == 201 and len(largest.json()["faces"]) == 1
    faces = admin.get(f"/v1/subjects/{sid}/faces").json()["items"]
    assert len(faces) == 2 and admin.get(f"/v1/subjects/{sid}").json()["face_count"] == 2
    # the face shrunk to ~30 px: still found (detector minimum 20 px), under the enrolment minimum (40)
    box = admin.post("/v1/detect", files={"image": ben[2].read_bytes()}).json()["faces"][0]["box"]
    tiny = _shrunk(ben[2], 30 / min(box["width"], box["height"]))
    assert admin.post("/v1/detect", files={"image": tiny}).json()["faces"], "the shrunk face is not detected"
    rejected = admin.post(f"/v1/subjects/{sid}/faces", files={"images": tiny}).json()["rejected"]
    assert rejected[0]["code"] == "low_quality" and "face_too_small" in rejected[0]["message"]


def _shrunk(path: Path, scale: float) -> bytes:
    import io

    from PIL import Image

    img = Image.open(path).convert("RGB")
    img = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))))
    out = io.BytesIO()
    img.save(out, format="JPEG")
    return out.getvalue()


def test_base64_json_and_embed(admin: httpx.Client, face: bytes) -> None:
    b64 = base64.b64encode(face).decode()
    multipart = admin.post("/v1/detect", files={"image": face}).json()
    as_json = admin.post("/v1/detect", json={"image_base64": b64}).json()
    data_url = admin.post("/v1/detect", json={"image_base64": "data:image/jpeg;base64," + b64}).json()
    assert multipart == as_json == data_url and len(multipart["faces"]) == 1
    box = multipart["faces"][0]["box"]
    assert 0 <= box["x"] < multipart["width"] and box["width"] > 40
    assert set(multipart["faces"][0]["landmarks"]) == {
        "left_eye",
        "right_eye",
        "nose",
        "mouth_left",
        "mouth_right",
    }
    emb = admin.post("/v1/embed", json={"image_base64": b64}).json()
    vec = np.asarray(emb["faces"][0]["embedding"])
    assert vec.shape == (128,) and np.linalg.norm(vec) == pytest.approx(1.0, abs=1e-4)
    verify = admin.post("/v1/verify", json={"image_a_base64": b64, "image_b_base64": b64, "threshold": 0.5}).json()
    assert verify["match"] is True and verify["distance"] < 0.05 and verify["threshold"] == 0.5


def _pipeline_crop(image: bytes, face: dict[str, Any]) -> np.ndarray:
    """The 160x160 crop the pipeline aligns for a face the server detected (its box and landmarks)."""
    from embeddings import Box, Detection, Landmarks, align_face, decode_image

    lm = {k: tuple(v) for k, v in face["landmarks"].items()}
    det = Detection(Box(**face["box"]), Landmarks(**lm), face["confidence"])
    return align_face(decode_image(image), det)


def _encoded(crop: np.ndarray, fmt: str = "PNG", size: int | None = None) -> bytes:
    img = Image.fromarray(crop)
    if size is not None:
        img = img.resize((size, size), Image.Resampling.BICUBIC)
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


def test_face_aligned_skips_detection_and_matches_the_detect_path(admin: httpx.Client, face: bytes) -> None:
    detected = admin.post("/v1/embed", files={"image": face}).json()["faces"]
    assert len(detected) == 1
    ref = np.asarray(detected[0]["embedding"])
    crop = _pipeline_crop(face, detected[0])
    r = admin.post("/v1/embed", files={"image": _encoded(crop)}, data={"face": "aligned"})
    assert r.status_code == 200, r.text
    (out,) = r.json()["faces"]
    vec = np.asarray(out["embedding"])
    assert vec.shape == (128,) and np.linalg.norm(vec) == pytest.approx(1.0, abs=1e-4)
    assert np.linalg.norm(vec - ref) < 0.02  # the same crop: the same embedding, up to the encoder's rounding
    assert out["box"] == {"x": 0.0, "y": 0.0, "width": 160.0, "height": 160.0}
    assert out["landmarks"] is None and out["confidence"] is None and out["quality"]["confidence"] is None
    assert out["quality"]["face_size"] == pytest.approx(160 / 1.15) and out["quality"]["reasons"] == []
    # any size: a 2x larger JPEG of the crop is resized back to 160x160 and lands next to it
    big = _encoded(crop, "JPEG", 320)
    as_json = admin.post("/v1/embed", json={"image_base64": base64.b64encode(big).decode(), "face": "aligned"})
    assert as_json.status_code == 200, as_json.text
    assert np.linalg.norm(np.asarray(as_json.json()["faces"][0]["embedding"]) - ref) < 0.15
    # verify and identify take it too
    v = admin.post("/v1/verify", files={"image_a": _encoded(crop), "image_b": big}, data={"face": "aligned"}).json()
    assert v["match"] is True and v["distance"] < 0.15 and v["face_a"]["width"] == 160 and v["face_b"]["width"] == 320
    ident = admin.post("/v1/identify", files={"image": big}, data={"face": "aligned"})
    assert ident.status_code == 200, ident.text
    (idf,) = ident.json()["faces"]
    assert idf["landmarks"] is None and idf["confidence"] is None and idf["box"]["width"] == 320
    # a small crop is embedded with its quality reason, not refused
    small = admin.post("/v1/embed", files={"image": _encoded(crop, size=32)}, data={"face": "aligned"}).json()
    assert "face_too_small" in small["faces"][0]["quality"]["reasons"]


def test_face_aligned_bad_input(admin: httpx.Client, face: bytes) -> None:
    for image in (png(1, 1), png(19, 40), png(200, 60)):  # too small, too small on one side, too elongated
        message = error(admin.post("/v1/embed", files={"image": image}, data={"face": "aligned"}), 422, "invalid_image")
        assert "aligned face crop" in message
    error(admin.post("/v1/identify", files={"image": png(1, 1)}, data={"face": "aligned"}), 422, "invalid_image")
    error(
        admin.post("/v1/verify", files={"image_a": face, "image_b": png(1, 1)}, data={"face": "aligned"}),
        422,
        "invalid_image",
    )
    error(admin.post("/v1/embed", files={"image": b"not an image"}, data={"face": "aligned"}), 422, "invalid_image")
    error(admin.post("/v1/embed", files={"image": face}, data={"face": "sideways"}), 422, "validation_error")


# ---- metrics and docs ------------------------------------------------------------------------------------


def test_metrics(admin: httpx.Client, face: bytes) -> None:
    admin.post("/v1/identify", files={"image": face})
    text = admin.get("/metrics").text
    assert 'facerec_http_requests_total{method="POST",route="/v1/identify",status="200"}' in text
    assert 'route="/v1/subjects/{subject_id}/faces"' in text
    assert 'facerec_http_request_duration_seconds_bucket{le="0.5",method="POST",route="/v1/identify"}' in text
    assert 'facerec_inference_seconds_count{operation="identify"}' in text
    assert 'facerec_faces_detected_total{endpoint="identify"}' in text
    subjects = admin.get("/v1/subjects").json()["items"]
    assert f"facerec_gallery_subjects {float(len(subjects))}" in text
