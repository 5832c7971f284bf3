"""Read-your-writes through two real replicas over HTTP, for every shared backend (PostgreSQL + pgvector,
PostgreSQL + Milvus): a face enrolled through one replica is identified by the other in the very next request;
once DELETE returned on one, the other never returns that subject again."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.faults.helpers import PEOPLE, photos, variant


def enrol(c: httpx.Client, sid: str, image: bytes) -> httpx.Response:
    return c.post(f"/v1/subjects/{sid}/faces", files=[("images", ("x.jpg", image, "image/jpeg"))])


def check_read_your_writes(url_a: str, url_b: str, celebrity_root: Path) -> None:
    """Each 5-celebrity person enrolled through one replica (alternating), identified, erased and looked for again
    through the other."""
    with httpx.Client(base_url=url_a, timeout=60) as a, httpx.Client(base_url=url_b, timeout=60) as b:
        for n, person in enumerate(PEOPLE):
            write, read = (a, b) if n % 2 == 0 else (b, a)  # both directions
            sid = write.post("/v1/subjects", json={"name": person}).json()["id"]
            for k, path in enumerate(photos(celebrity_root, person)):  # the first photo the quality gate accepts
                image = variant(path, 1000 + 100 * n + k)
                r = enrol(write, sid, image)
                if r.status_code == 201:
                    break
                assert r.status_code == 200 and r.json()["rejected"][0]["code"] == "low_quality", r.text
            assert r.status_code == 201, r.text
            face_id = r.json()["faces"][0]["id"]
            got = read.post("/v1/identify", files={"image": ("p.jpg", image, "image/jpeg")})  # the very next request
            assert got.status_code == 200, got.text
            match = got.json()["faces"][0]["match"]
            assert match is not None and match["subject_id"] == sid and match["face_id"] == face_id
            assert read.get(f"/v1/subjects/{sid}").json()["face_count"] == 1
            assert write.delete(f"/v1/subjects/{sid}").status_code == 204
            got = read.post("/v1/identify", files={"image": ("p.jpg", image, "image/jpeg")})
            assert got.status_code == 200
            for face in got.json()["faces"]:
                assert (face["match"] or {}).get("subject_id") != sid
                assert all(c["subject_id"] != sid for c in face.get("candidates", []))
            assert read.get(f"/v1/subjects/{sid}").status_code == 404
