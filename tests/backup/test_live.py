"""A backup taken while a real server (real MTCNN, FaceNet, SQLite) is enrolling faces, restored into a new data
dir and served: the same subjects, faces and identify answers, every enrolment acknowledged before the backup
started, the index rebuilt from the database, and an audit log that goes on where the backup's ended."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.service.helpers import ENROLLED, UNKNOWN, images
from tests.service.server import REPO, Server

pytestmark = pytest.mark.slow

ENV = {"FACEREC_RATE_LIMIT_PER_MINUTE": "0"}


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FACEREC_")}
    env |= {"PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "2"}
    cmd = [sys.executable, "-m", "service.cli", *args]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def _enrol(client: httpx.Client, sid: str, photo: Path) -> list[int]:
    r = client.post(f"/v1/subjects/{sid}/faces", files=[("images", (photo.name, photo.read_bytes(), "image/jpeg"))])
    assert r.status_code in (200, 201), r.text  # 200: the photo was rejected (a face too small...)
    return [f["id"] for f in r.json()["faces"]]


def _gallery(client: httpx.Client) -> dict[str, Any]:
    """Subject id -> (name, sorted face ids)."""
    subjects = client.get("/v1/subjects", params={"limit": 100}).json()["items"]
    return {
        s["id"]: (s["name"], sorted(f["id"] for f in client.get(f"/v1/subjects/{s['id']}/faces").json()["items"]))
        for s in subjects
    }


def _identify(client: httpx.Client, dataset: Path) -> list[tuple[str | None, float]]:
    """The best candidate (subject, distance to 4 places) for two val photos of each enrolled person."""
    out = []
    for person in ENROLLED:
        for photo in images(dataset, "val", person)[:2]:
            r = client.post("/v1/identify", files={"image": photo.read_bytes()})
            assert r.status_code == 200, r.text
            best = r.json()["faces"][0]["candidates"][0]
            out.append((best["subject_id"], round(best["distance"], 4)))
    return out


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, celebrity_root: Path) -> Iterator[Server]:
    yield from Server(tmp_path_factory.mktemp("live") / "data", env=ENV).serving()


def test_a_backup_under_writes_restores_to_the_same_gallery(
    server: Server, celebrity_root: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    work = tmp_path_factory.mktemp("backup")
    with httpx.Client(base_url=server.url, timeout=120) as client:
        for person in ENROLLED:
            sid = client.post("/v1/subjects", json={"name": person}).json()["id"]
            for photo in images(celebrity_root, "train", person)[:3]:
                _enrol(client, sid, photo)
        # A writer enrols a fifth person's photos one by one, before, during and after the backup.
        writer_sid = client.post("/v1/subjects", json={"name": UNKNOWN}).json()["id"]
        acked: list[tuple[float, list[int]]] = []
        stop = threading.Event()

        def write() -> None:
            with httpx.Client(base_url=server.url, timeout=120) as c:
                for photo in images(celebrity_root, "train", UNKNOWN):
                    if stop.is_set():
                        return
                    ids = _enrol(c, writer_sid, photo)
                    acked.append((time.monotonic(), ids))

        writer = threading.Thread(target=write)
        writer.start()
        while not acked:
            time.sleep(0.05)
        started = time.monotonic()
        taken = _cli("backup", str(work / "b"), "--data", str(server.data), "--json")
        finished = time.monotonic()
        stop.set()
        writer.join()
        assert taken.returncode == 0, taken.stderr
        manifest = json.loads(taken.stdout)
        before = {i for t, ids in acked if t < started for i in ids}
        assert acked[0][0] < started and acked[-1][0] > finished, "the writes did not span the backup"
        original_answers = _identify(client, celebrity_root)
        assert (server.data / "gallery.sqlite3-wal").exists()  # the server had the database open throughout

    restored = work / "restored"
    put = _cli("restore", str(work / "b"), "--data", str(restored))
    assert put.returncode == 0, put.stderr
    assert not (restored / "index").exists()
    audit_before = (restored / "audit.log").read_bytes()
    with httpx.Client(base_url=(again := Server(restored, env=ENV).start()).url, timeout=120) as client:
        try:
            gallery = _gallery(client)
            assert len(gallery) == manifest["counts"]["subjects"] == len(ENROLLED) + 1
            assert sum(len(ids) for _, ids in gallery.values()) == manifest["counts"]["faces"]
            assert before <= set(gallery[writer_sid][1]), "an enrolment acknowledged before the backup is missing"
            assert _identify(client, celebrity_root) == original_answers  # the index was rebuilt from gallery.sqlite3
            client.post("/v1/subjects", json={"name": "after restore"}).raise_for_status()
        finally:
            again.stop()
    assert (restored / "index").is_dir()  # the rebuilt index was saved when the server stopped
    audit_after = (restored / "audit.log").read_bytes()
    assert audit_after.startswith(audit_before) and len(audit_before) == manifest["files"][0]["size"]
    records = [json.loads(line) for line in audit_after.splitlines()]
    assert records[-1]["action"] == "subject.create" and len(records) == manifest["counts"]["audit_records"] + 1
    audited = {i for r in records if r["action"] == "face.enroll" for i in r["target"]["face_ids"]}
    # the audit log, copied after the databases, records what they hold but for the one enrolment (the writer's
    # requests are sequential) whose record was being written at that moment
    restored_faces = set(gallery[writer_sid][1])
    unaudited = [i for _, ids in acked for i in ids if i in restored_faces and i not in audited]
    assert len(unaudited) <= max(len(ids) for _, ids in acked), unaudited
