"""Detect, embed, identify, verify, enrolment, live frames and the photo library's index and search refuse
what they would not read, through the real app (a fake analyzer stands in for the model): an unknown form field
or JSON member, an image under another name, a plain field under an image's name, a query parameter. Each is a
422 ``validation_error`` in the envelope naming it and the fields the endpoint takes, the model is never called
and nothing is stored; the same requests without it are answered."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest

from tests.service.fakes import FakeAnalyzer, FakeDetector, FakeFace, app_with, local, unit
from tests.service.helpers import png, wait_until


class CountingAnalyzer(FakeAnalyzer):
    """Answers detect, embed, identify and verify (no face, or one face per image); counts its calls."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def load_image(self, image: bytes) -> Any:
        self.calls += 1
        return super().load_image(image)

    def analyze(self, image: bytes) -> list[Any]:
        self.calls += 1
        return []

    def single_face(self, data: bytes, *, largest: bool = False, check_quality: bool = True) -> FakeFace:
        self.calls += 1
        return FakeFace(unit(0))


IMAGE = png(8, 8)
ENDPOINTS: dict[str, tuple[tuple[str, ...], dict[str, str]]] = {
    "/v1/detect": (("image",), {}),
    "/v1/embed": (("image",), {"face": "all"}),
    "/v1/identify": (("image",), {"threshold": "1.0", "top_k": "3", "face": "all"}),
    "/v1/verify": (("image_a", "image_b"), {"threshold": "1.0", "face": "largest"}),
}
"""Each endpoint's image fields and a value for each of its other fields."""


def multipart(images: tuple[str, ...], fields: dict[str, str]) -> dict[str, Any]:
    return {"files": {name: (f"{name}.png", IMAGE, "image/png") for name in images}, "data": fields}


def as_json(images: tuple[str, ...], fields: dict[str, Any]) -> dict[str, Any]:
    encoded = base64.b64encode(IMAGE).decode()
    return {"json": {**{f"{name}_base64": encoded for name in images}, **fields}}


def refused(r: Any, *words: str) -> str:
    """The message of a 422 ``validation_error`` envelope, which names each of ``words``."""
    assert r.status_code == 422, r.text
    body = r.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, body
    assert body["error"]["code"] == "validation_error", body
    message: str = body["error"]["message"]
    for word in words:
        assert word in message, (word, message)
    return message


@pytest.mark.parametrize("path", list(ENDPOINTS))
def test_unknown_fields_are_refused_before_the_model_runs(tmp_path: Path, path: str) -> None:
    images, fields = ENDPOINTS[path]
    analyzer = CountingAnalyzer()
    with local(app_with(tmp_path, lambda s: analyzer)) as client:
        wait_until(lambda: client.get("/readyz").status_code == 200)
        # every field the endpoint takes, both ways: answered
        for kwargs in (multipart(images, fields), as_json(images, fields)):
            assert client.post(path, **kwargs).status_code == 200, client.post(path, **kwargs).text
        answered = analyzer.calls
        assert answered > 0
        takes = [f"`{n}`" for n in (*images, *fields)]

        # an unknown plain field (a typo of a real one), as a form field and as a JSON member
        message = refused(client.post(path, **multipart(images, {**fields, "treshold": "0.5"})), "treshold", *takes)
        assert "unknown field" in message
        refused(client.post(path, **as_json(images, {**fields, "treshold": 0.5})), "treshold", "unknown field")
        # an image under a name the endpoint does not read
        message = refused(client.post(path, **multipart((*images, "photo"), fields)), "photo", *takes)
        assert "unknown image field" in message
        refused(client.post(path, **as_json((*images, "images"), fields)), "images_base64", f"`{images[0]}_base64`")
        # an image sent as a plain value (JSON without the _base64 suffix)
        plain = {**as_json(images[1:], fields)["json"], images[0]: base64.b64encode(IMAGE).decode()}
        refused(client.post(path, json=plain), f"{images[0]}: an image goes in as a file", f"`{images[0]}_base64`")
        # a query parameter: the fields go in the body
        refused(client.post(f"{path}?threshold=0.5", **multipart(images, fields)), "threshold", "query parameter")
        assert analyzer.calls == answered, "the model ran for a refused request"


def test_detect_takes_its_image_only(tmp_path: Path) -> None:
    """The brief's case: ``/v1/detect`` has no field but ``image``; anything beside it is refused."""
    analyzer = CountingAnalyzer()
    with local(app_with(tmp_path, lambda s: analyzer)) as client:
        ok = client.post("/v1/detect", files={"image": IMAGE})
        assert ok.status_code == 200 and ok.json() == {"width": 20, "height": 10, "faces": []}
        for extra in ({"threshold": "0.5"}, {"top_k": "3"}, {"face": "aligned"}):
            (name,) = extra
            r = client.post("/v1/detect", files={"image": IMAGE}, data=extra)
            assert refused(r, name) == f"{name}: unknown field; this endpoint takes `image`"
        r = client.post("/v1/detect", json={"image_base64": base64.b64encode(IMAGE).decode(), "threshold": 0.5})
        assert refused(r, "threshold") == "threshold: unknown field; this endpoint takes `image_base64`"
        assert analyzer.calls == 1


class Stored:
    """What each of the other image endpoints leaves behind, counted: a subject's faces, live sessions, photos."""

    def __init__(self, client: Any, analyzer: CountingAnalyzer) -> None:
        self.client, self.analyzer = client, analyzer
        app = client.app
        app.state.media._detector = FakeDetector(list)  # the live frames' detector, instead of MTCNN
        self.sid = client.post("/v1/subjects", json={"name": "Ada"}).json()["id"]

    def count(self) -> tuple[int, ...]:
        """(model calls, the subject's faces, live sessions, indexed photos)"""
        app = self.client.app
        faces = self.client.get(f"/v1/subjects/{self.sid}/faces").json()["items"]
        return self.analyzer.calls, len(faces), len(app.state.media.live), len(app.state.photos.store.known_sha256s())


OTHER_ENDPOINTS: dict[str, tuple[tuple[str, ...], dict[str, str], tuple[str, ...]]] = {
    "/v1/subjects/{sid}/faces": (("images",), {"face": "largest"}, ("images", "image", "face")),
    "/v1/live/frames": (("image",), {"session": "tab-3f9a2c71"}, ("image", "session")),
    "/v1/photos": (("image",), {"external_id": "a.jpg"}, ("image", "external_id")),
    "/v1/search": (("image",), {"top_k": "3", "threshold": "1.0"}, ("image", "face_id", "top_k", "threshold")),
}
"""Each endpoint's image fields sent, a value for some of its other fields, and every field it takes."""


@pytest.mark.parametrize("route", list(OTHER_ENDPOINTS))
def test_the_other_image_endpoints_refuse_unknown_fields_and_change_nothing(tmp_path: Path, route: str) -> None:
    """Enrolment, live frames and the photo library's index and search: the same refusals, and neither the
    model runs nor anything is stored (no face enrolled, no live session, no photo indexed)."""
    images, fields, takes = OTHER_ENDPOINTS[route]
    analyzer = CountingAnalyzer()
    app = app_with(tmp_path, lambda s: analyzer, photo_library=True, photo_recluster_interval_s=0)
    with local(app) as client:
        wait_until(lambda: client.get("/readyz").status_code == 200)
        stored = Stored(client, analyzer)
        path = route.format(sid=stored.sid)
        before = stored.count()
        named = [f"`{n}`" for n in takes]
        stray_image = f"{images[0]}: an image goes in as a file"
        cases: list[tuple[dict[str, Any], tuple[str, ...]]] = [
            (multipart(images, {**fields, "treshold": "0.5"}), ("treshold: unknown field", *named)),
            (as_json(images, {**fields, "treshold": 0.5}), ("treshold: unknown field", f"`{images[0]}_base64`")),
            (multipart((*images, "photo"), fields), ("photo: unknown image field", *named)),
            (as_json((*images, "picture"), fields), ("picture_base64: unknown image field", f"`{takes[-1]}`")),
            ({"json": {**fields, images[0]: base64.b64encode(IMAGE).decode()}}, (stray_image,)),
        ]
        for kwargs, words in cases:
            refused(client.post(path, **kwargs), *words)
        # a query parameter, even one of the endpoint's own fields: they go in the body
        name = next(iter(fields))
        refused(client.post(f"{path}?{name}=x", **multipart(images, fields)), name, "unknown query parameter", *named)
        refused(client.post(f"{path}?largest=true", **multipart(images, fields)), "largest", "query parameter")
        assert stored.count() == before, "a refused request ran the model or stored something"

        # the same requests without the stray field are answered, and do what they do
        for kwargs in (multipart(images, fields), as_json(images, fields)):
            r = client.post(path, **kwargs)
            assert r.status_code in (200, 201), r.text
        assert stored.count()[0] > before[0]
        changed = {"/v1/subjects/{sid}/faces": 1, "/v1/live/frames": 2, "/v1/photos": 3}.get(route)
        if changed is not None:
            assert stored.count()[changed] == before[changed] + 1, stored.count()


def test_a_json_boolean_is_no_number(tmp_path: Path) -> None:
    """``{"top_k": true}`` was read as 1 and answered 200: a JSON boolean for any number field of a request is a 422
    naming the field, before the model runs; the same field as form text still reads as a number."""
    analyzer = CountingAnalyzer()
    with local(app_with(tmp_path, lambda s: analyzer)) as client:
        wait_until(lambda: client.get("/readyz").status_code == 200)
        for path, field in (("/v1/identify", "top_k"), ("/v1/identify", "threshold"), ("/v1/verify", "threshold")):
            images, fields = ENDPOINTS[path]
            before = analyzer.calls
            refused(client.post(path, **as_json(images, {field: True})), f"{field} takes a number, not true")
            assert analyzer.calls == before, "the model ran for a refused request"
            assert client.post(path, **multipart(images, {field: fields[field]})).status_code == 200
        stream = {"name": "door", "url": "rtsp://camera.example/door", "fps": True}
        refused(client.post("/v1/streams", json=stream), "fps takes a number, not true")
        assert client.get("/v1/streams").json() == []
