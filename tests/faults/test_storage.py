"""A full disk and a read-only data dir under the real app (lifespan, real weights, real gallery on a tmp dir).

Writes must fail with the error envelope and a stable code (507 ``insufficient_storage``, 503
``storage_unavailable``), never a 500; reads (list, get, identify, verify against a subject) keep working; and
after the fault is lifted the gallery is intact: ``integrity_check`` ok, every acknowledged face and subject
present, the index holding exactly SQLite's faces.

What is simulated and how (no root tricks, no small mounted file system):

* **Disk full**: ``PRAGMA max_page_count`` set to the database's current size on the gallery's writer
  connection, so SQLite itself answers ``SQLITE_FULL`` ("database or disk is full") when a write needs a new
  page, exactly the error it gives for ``ENOSPC``. Single-face enrolments fit in the last page's free space
  until it fills: the test enrols until the first 507, and every 201 before it must survive.
* **Read-only data dir**: the writer connection is swapped for one opened with ``mode=ro``, what SQLite falls
  back to when it cannot open the file for writing; writes get ``SQLITE_READONLY``. (Tests run as root, where
  ``chmod`` would not stop writes.)
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.bootstrap import default_analyzer
from service.config import Settings
from service.gallery import LocalGallery, open_gallery
from tests.faults.helpers import photos, variant

NO_LIMIT = 1073741823


class Served:
    """The app in-process with its real lifespan; ``gallery``: the one the lifespan opened."""

    def __init__(self, data: Path, analyzer: Any) -> None:
        self.data = data
        self.gallery: LocalGallery | None = None

        def gallery_factory(path: Path) -> LocalGallery:
            self.gallery = open_gallery(path)
            return self.gallery

        app = create_app(Settings(data=data), analyzer_factory=lambda _: analyzer, gallery_factory=gallery_factory)
        self.client = TestClient(app, base_url="http://127.0.0.1:8000", client=("127.0.0.1", 50000))
        self.client.__enter__()
        self.closed = False
        self.acked_faces: dict[int, str] = {}
        self.acked_subjects: set[str] = set()
        self.good: set[Path] = set()
        """Photos that passed the quality minimums once (so a refusal can only come from the storage)."""
        self.n = 0

    @property
    def g(self) -> LocalGallery:
        assert self.gallery is not None
        return self.gallery

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.client.__exit__(None, None, None)

    def subject(self, name: str) -> httpx.Response:
        r = self.client.post("/v1/subjects", json={"name": name})
        if r.status_code == 201:
            self.acked_subjects.add(r.json()["id"])
        return r

    def enrol(self, sid: str, *files: Path) -> httpx.Response:
        """Enrol new bytes of these photos; records acknowledged faces and the photos that pass quality."""
        images, path_of = [], {}
        for f in files:
            self.n += 1
            data = variant(f, self.n)
            path_of[hashlib.sha256(data).hexdigest()] = f
            images.append(("images", (f"{self.n}.jpg", data, "image/jpeg")))
        r = self.client.post(f"/v1/subjects/{sid}/faces", files=images)
        if r.status_code in (200, 201):
            for face in r.json()["faces"]:
                self.acked_faces[face["id"]] = sid
                self.good.add(path_of[face["image_sha256"]])
        return r

    def consistent(self) -> None:
        model = self.client.get(f"/v1/faces/{next(iter(self.acked_faces))}").json()["model_id"]
        in_sql = self.g.store.face_ids(model).tolist()
        assert self.g.index_ids(model).tolist() == in_sql
        assert set(self.acked_faces) <= set(in_sql)


def _error(r: httpx.Response, status: int, code: str) -> None:
    assert r.status_code == status, (r.status_code, r.text)
    body = r.json()
    assert body["error"]["code"] == code and body["error"]["message"], body


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, celebrity_root: Path) -> Iterator[Served]:
    analyzer = default_analyzer(Settings())
    s = Served(tmp_path_factory.mktemp("storage") / "data", analyzer)
    s.photos = {p: photos(celebrity_root, p) for p in ("madonna", "elton_john")}  # type: ignore[attr-defined]
    yield s
    s.close()


def _reads_work(s: Served, sid: str, probe: Path) -> None:
    r = s.client.get("/v1/subjects")
    assert r.status_code == 200 and sid in {x["id"] for x in r.json()["items"]}
    r = s.client.get(f"/v1/subjects/{sid}/faces")
    assert r.status_code == 200 and r.json()["items"]
    img = probe.read_bytes()
    r = s.client.post("/v1/identify", files={"image": ("p.jpg", img, "image/jpeg")})
    assert r.status_code == 200, r.text
    assert r.json()["faces"][0]["candidates"][0]["subject_id"] == sid
    r = s.client.post("/v1/verify", files={"image": ("p.jpg", img, "image/jpeg")}, data={"subject_id": sid})
    assert r.status_code == 200 and r.json()["match"] is True, r.text
    assert s.client.get("/readyz").status_code == 200


def test_disk_full(served: Served) -> None:
    s, pics = served, served.photos  # type: ignore[attr-defined]
    madonna = s.subject("madonna").json()["id"]
    elton = s.subject("elton").json()["id"]
    assert s.enrol(madonna, *pics["madonna"][:4]).status_code == 201
    assert s.enrol(elton, *pics["elton_john"][:4]).status_code == 201
    good_elton = [p for p in pics["elton_john"] if p in s.good]
    w = s.g.store._writer
    w.execute(f"PRAGMA max_page_count={w.execute('PRAGMA page_count').fetchone()[0]}")
    try:
        before = len(s.acked_faces)
        for i in range(40):  # acknowledged (201) until the last page is full, then 507; 200 = photo rejected
            r = s.enrol(madonna, pics["madonna"][i % len(pics["madonna"])])
            if r.status_code not in (200, 201):
                break
        _error(r, 507, "insufficient_storage")
        print(f"disk full: {len(s.acked_faces) - before} faces acknowledged after the limit, then 507")
        for i in range(500):
            r = s.subject(f"filler-{i}-" + "x" * 100)
            if r.status_code != 201:
                break
        _error(r, 507, "insufficient_storage")
        _error(s.enrol(elton, *good_elton), 507, "insufficient_storage")
        s.consistent()  # nothing half-written; the index holds exactly SQLite's faces
        _reads_work(s, madonna, pics["madonna"][0])
        fid = max(f for f, sid in s.acked_faces.items() if sid == elton)
        r = s.client.delete(f"/v1/faces/{fid}")  # erasures log a row: they may or may not fit, never half
        if r.status_code == 204:
            del s.acked_faces[fid]
        else:
            _error(r, 507, "insufficient_storage")
        print(f"disk full: erasure answered {r.status_code}")
        s.consistent()
    finally:
        w.execute(f"PRAGMA max_page_count={NO_LIMIT}")
    assert s.enrol(elton, good_elton[0]).status_code == 201
    s.consistent()


def test_readonly_data_dir(served: Served) -> None:
    s, pics = served, served.photos  # type: ignore[attr-defined]
    madonna = next(iter(s.acked_faces.values()))
    good = [p for p in pics["madonna"] if p in s.good]
    store = s.g.store
    writer = store._writer
    store._writer = sqlite3.connect(
        f"file:{store.path}?mode=ro", uri=True, isolation_level=None, check_same_thread=False
    )
    try:
        _error(s.enrol(madonna, good[0]), 503, "storage_unavailable")
        _error(s.client.post("/v1/subjects", json={"name": "nope"}), 503, "storage_unavailable")
        _error(s.client.patch(f"/v1/subjects/{madonna}", json={"name": "renamed"}), 503, "storage_unavailable")
        _error(s.client.delete(f"/v1/faces/{next(iter(s.acked_faces))}"), 503, "storage_unavailable")
        _error(s.client.delete(f"/v1/subjects/{madonna}"), 503, "storage_unavailable")
        s.consistent()
        _reads_work(s, madonna, pics["madonna"][0])
    finally:
        store._writer.close()
        store._writer = writer
    assert s.enrol(madonna, good[0]).status_code == 201
    s.consistent()


def test_gallery_intact_after_the_faults(served: Served) -> None:
    s = served
    model = s.client.get(f"/v1/faces/{next(iter(s.acked_faces))}").json()["model_id"]
    s.close()  # the lifespan closes the gallery (snapshot) and releases the data dir
    with open_gallery(s.data, auto_maintain=False) as g:
        assert g.store._reader().execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        in_sql = g.store.face_ids(model).tolist()
        assert sorted(s.acked_faces) == in_sql  # every acknowledged face, nothing else
        assert g.index_ids(model).tolist() == in_sql
        assert {x.id for x in g.list_subjects(limit=1000)[0]} == s.acked_subjects
        for fid, sid in s.acked_faces.items():
            assert g.get_face(fid).subject_id == sid
