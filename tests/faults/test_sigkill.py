"""SIGKILL of a real server during bulk enrolment over HTTP, several times, on the same data dir.

A client thread enrols re-encoded photos of the 5-celebrity set (two per request: one transaction) and creates
subjects now and then, recording every face and subject acknowledged with a 2xx. The server (``facerec
serve``, real weights) is killed with SIGKILL at a random moment while requests are in flight; one round ends
with a graceful SIGTERM instead, so a later round starts from a snapshot plus replay rather than a rebuild.
After each restart every acknowledged face and subject must be listed by the API and the faces of the round
just killed must be identified from their own image; after the last kill the gallery is opened directly (as
the next server would) and its index must hold exactly SQLite's faces, each acknowledged one its own nearest.
"""

from __future__ import annotations

import hashlib
import os
import random
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest

from service.gallery import open_gallery
from service.gallery.snapshot import snapshot_path
from tests.faults.helpers import PEOPLE, photos, variant
from tests.service.server import Server

pytestmark = pytest.mark.slow  # a real server killed during bulk enrolment

ROUNDS = ("kill", "kill", "term", "kill")


@dataclass
class Acked:
    face_id: int
    subject_id: str
    image: bytes
    round: int


class Enroller(threading.Thread):
    """Enrols until stopped or the server dies; ``acked``: every face a 2xx acknowledged."""

    def __init__(
        self, url: str, subjects: dict[str, str], pictures: dict[str, list[Path]], round_: int, counter: int
    ) -> None:
        super().__init__(daemon=True)
        self.url, self.subjects, self.pictures, self.round, self.counter = url, subjects, pictures, round_, counter
        self.acked: list[Acked] = []
        self.new_subjects: list[str] = []
        self.unexpected: list[str] = []
        self.model_id = ""
        self.cut = False
        """A request was in flight when the server died."""
        self.stop = threading.Event()

    def run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=60.0) as c:
            while not self.stop.is_set():
                n = self.counter = self.counter + 1
                try:
                    if n % 5 == 0:
                        r = c.post("/v1/subjects", json={"name": f"extra-{n}", "metadata": {"n": n}})
                        if r.status_code == 201:
                            self.new_subjects.append(r.json()["id"])
                        else:
                            self.unexpected.append(f"create: {r.status_code} {r.text[:200]}")
                        continue
                    person = PEOPLE[n % len(PEOPLE)]
                    files = self.pictures[person]
                    images = [variant(files[(n + k) % len(files)], n * 2 + k) for k in range(2)]
                    sid = self.subjects[person]
                    r = c.post(
                        f"/v1/subjects/{sid}/faces",
                        files=[("images", (f"{n}-{k}.jpg", img, "image/jpeg")) for k, img in enumerate(images)],
                    )
                except httpx.HTTPError:
                    self.cut = True
                    return  # the server died: this request's outcome is unknown (either is correct)
                if r.status_code not in (200, 201):
                    self.unexpected.append(f"enrol: {r.status_code} {r.text[:200]}")
                    continue
                by_sha = {hashlib.sha256(img).hexdigest(): img for img in images}
                for face in r.json()["faces"]:
                    self.model_id = face["model_id"]
                    self.acked.append(Acked(face["id"], sid, by_sha[face["image_sha256"]], self.round))


def _check_api(url: str, acked: list[Acked], subjects: list[str], identify: list[Acked]) -> None:
    with httpx.Client(base_url=url, timeout=60.0) as c:
        listed: set[int] = set()
        for sid in {a.subject_id for a in acked}:
            r = c.get(f"/v1/subjects/{sid}/faces")
            assert r.status_code == 200, r.text
            listed |= {f["id"] for f in r.json()["items"]}
        missing = sorted({a.face_id for a in acked} - listed)
        assert not missing, f"acknowledged faces lost: {missing}"
        for sid in subjects:
            assert c.get(f"/v1/subjects/{sid}").status_code == 200, f"acknowledged subject {sid} lost"
        for a in identify:
            r = c.get(f"/v1/faces/{a.face_id}")
            assert r.status_code == 200 and r.json()["subject_id"] == a.subject_id, r.text
            r = c.post("/v1/identify", files={"image": ("probe.jpg", a.image, "image/jpeg")}, data={"top_k": "1"})
            assert r.status_code == 200, r.text
            best = r.json()["faces"][0]["candidates"][0]
            # the subject's score is its template's distance; its nearest face is the enrolled image's own
            assert best["subject_id"] == a.subject_id and best["face_distance"] < 0.05, (a.face_id, best)


def test_sigkill_during_bulk_enrolment(tmp_path: Path, celebrity_root: Path) -> None:
    seed = int(os.environ.get("FACEREC_FAULT_SEED", time.time_ns() % 2**32))
    rng = random.Random(seed)
    data = tmp_path / "data"
    server = Server(data, env={"OMP_NUM_THREADS": "1"})
    pictures = {p: photos(celebrity_root, p) for p in PEOPLE}
    acked: list[Acked] = []
    created: list[str] = []
    counter = 0
    model_id = ""
    cut = 0
    try:
        for round_, how in enumerate(ROUNDS):
            server.start()
            if round_ == 0:
                subjects = {}
                for person in PEOPLE:
                    r = httpx.post(f"{server.url}/v1/subjects", json={"name": person}, timeout=30)
                    assert r.status_code == 201, r.text
                    subjects[person] = r.json()["id"]
                created += list(subjects.values())
            else:  # every acknowledgement so far survived the previous kill; the last round's faces are found
                last = [a for a in acked if a.round == round_ - 1]
                _check_api(server.url, acked, created, last[-2:])
            enroller = Enroller(server.url, subjects, pictures, round_, counter)
            enroller.start()
            deadline = time.monotonic() + 90
            while len(enroller.acked) < 2 and time.monotonic() < deadline and enroller.is_alive():
                time.sleep(0.05)
            assert enroller.acked, f"no enrolment acknowledged in round {round_}: {enroller.unexpected}"
            time.sleep(rng.uniform(0.0, 3.0))
            assert server.proc is not None
            if how == "kill":
                os.kill(server.proc.pid, signal.SIGKILL)
                server.proc.wait()
                server.proc = None
            else:
                server.stop()  # graceful: uvicorn finishes the in-flight request, the gallery saves a snapshot
            enroller.stop.set()
            enroller.join(timeout=60)
            assert not enroller.unexpected, (seed, enroller.unexpected)
            acked += enroller.acked
            created += enroller.new_subjects
            counter = enroller.counter + 1
            model_id = enroller.model_id or model_id
            cut += enroller.cut and how == "kill"

        # the state the next server would open after the last SIGKILL
        assert snapshot_path(data, model_id).is_file()  # saved by the graceful stop
        g = open_gallery(data, auto_maintain=False)
        try:
            assert model_id in g.stats().snapshots  # loaded (then replayed), not rebuilt
            in_sql = g.store.face_ids(model_id)
            in_index = g.index_ids(model_id)
            assert in_index.tolist() == in_sql.tolist(), "the index and SQLite disagree"
            assert {a.face_id for a in acked} <= set(in_sql.tolist())
            assert g.store._reader().execute("PRAGMA integrity_check").fetchall() == [("ok",)]
            ids = sorted(a.face_id for a in acked)
            marks = ",".join("?" * len(ids))
            blobs = dict(g.store._reader().execute(f"SELECT id, embedding FROM faces WHERE id IN ({marks})", ids))
            probes = np.stack([np.frombuffer(blobs[i], "<f4") for i in ids])
            subject_of = {a.face_id: a.subject_id for a in acked}
            for fid, hits in zip(ids, g.search(probes, model_id=model_id, top_k=1), strict=True):
                assert hits[0].distance < 1e-3 and hits[0].subject_id == subject_of[fid], (fid, hits[0])
        finally:
            g.close()

        server.start()
        _check_api(server.url, acked, created, [a for a in acked if a.round == len(ROUNDS) - 1][-2:])
        n_faces, n_subjects = len(acked), len(created)
        print(f"seed {seed}: {n_faces} faces, {n_subjects} subjects acknowledged; {cut} kills mid-request")
    finally:
        server.stop()
