"""Two app instances (replicas) on one real PostgreSQL, in-process: events, video jobs and live streams written
through one are read through the other over the HTTP API; each stream is read by one replica only."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from service.app import create_app
from service.config import Settings
from service.events.store import Event


class NoAnalyzer:
    """The app's model slot: these requests never analyse a face (the job below fails before a frame)."""

    model_id = "none"
    threshold = 1.0


def no_analyzer(_: Settings) -> Any:
    """The ``analyzer_factory``: a stand-in with only what the app reads of a FaceAnalyzer, so typed Any."""
    return NoAnalyzer()


def _app(tmp_path: Path, url: str, name: str) -> Any:
    return create_app(Settings(data=tmp_path / name, database_url=url), analyzer_factory=no_analyzer)


def _until(check: Any, timeout_s: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while not (result := check()):
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)
    return result


def test_events_jobs_and_streams_are_shared_by_replicas(tmp_path: Path, pg_url: str) -> None:
    a, b = _app(tmp_path, pg_url, "a"), _app(tmp_path, pg_url, "b")
    local = {"base_url": "http://127.0.0.1:8000", "client": ("127.0.0.1", 50000)}
    with TestClient(a, **local) as ca, TestClient(b, **local) as cb:  # type: ignore[arg-type]
        # an event recorded on a (as its video job or stream would) is listed by b
        event = Event("ev1", time.time(), "stream:x", 1, None, None, None, None, 0.0, 1.0, 3)
        a.state.media.recorder.record([event])
        items = cb.get("/v1/events", params={"source": "stream:x"}).json()["items"]
        assert [e["id"] for e in items] == ["ev1"]

        # a video uploaded to a is processed by a (it holds the file) and polled through b
        up = ca.post("/v1/videos", files={"video": ("clip.mp4", b"not a video at all", "video/mp4")})
        assert up.status_code == 202, up.text
        job_id = up.json()["id"]
        assert cb.get(f"/v1/videos/{job_id}").status_code == 200
        done = _until(lambda: (j := cb.get(f"/v1/videos/{job_id}").json())["status"] == "failed" and j)
        assert "not a video" in done["error"]
        assert [v["id"] for v in cb.get("/v1/videos").json()["items"]] == [job_id]

        # a stream added through b is listed by a and read by exactly one of them
        created = cb.post("/v1/streams", json={"name": "door", "url": "rtsp://127.0.0.1:9/none", "fps": 1.0})
        assert created.status_code == 201, created.text
        sid = created.json()["id"]
        for replica in (a, b):
            replica.state.media.streams.sync()  # what each replica's lease thread does every few seconds
        readers = [r for r in (a, b) if [w.cfg.id for w in r.state.media.streams.workers()] == [sid]]
        assert len(readers) == 1 and not (a.state.media.streams.workers() and b.state.media.streams.workers())
        listed = ca.get(f"/v1/streams/{sid}").json()
        assert listed["name"] == "door" and listed["health"]["state"] in ("connecting", "reconnecting", "waiting")
        assert ca.delete(f"/v1/streams/{sid}").status_code == 204
        for replica in (a, b):
            replica.state.media.streams.sync()
        assert not a.state.media.streams.workers() and not b.state.media.streams.workers()
        assert cb.get(f"/v1/streams/{sid}").status_code == 404
    assert not (tmp_path / "a" / "events.db").exists() and not (tmp_path / "b" / "videos.db").exists()


def test_events_export_reads_the_database(tmp_path: Path, pg_url: str) -> None:
    import json

    from typer.testing import CliRunner

    from service.cli import app as cli
    from service.pgstores import open_postgres

    backend = open_postgres(pg_url)
    try:
        events = backend.media_stores(tmp_path / "replica").events
        events.add([Event(f"e{i}", 1.0e9 + i, "video:v", i, "s1", "Ada", 0.5, 0.01, 0.0, 1.0, 3) for i in range(3)],
                   outbox=False)  # fmt: skip
        bo = backend.gallery.create_subject(name="Bo", metadata={})
    finally:
        backend.close()
    env = {"FACEREC_DATABASE_URL": pg_url, "FACEREC_DATA": str(tmp_path / "cli")}
    out = CliRunner().invoke(cli, ["events", "export", "--jsonl"], env=env)
    assert out.exit_code == 0, out.output
    rows = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    assert [r["id"] for r in rows] == ["e0", "e1", "e2"] and rows[0]["name"] == "Ada"
    # the stores live in the database: commands that read or erase make no data dir (no replica id, no uploads)
    listed = CliRunner().invoke(cli, ["subjects", "list", "--json"], env=env)
    assert listed.exit_code == 0 and [s["name"] for s in json.loads(listed.stdout)] == ["Bo"], listed.output
    gone = CliRunner().invoke(cli, ["subjects", "delete", bo.id, "--yes"], env=env)
    assert gone.exit_code == 0, gone.output
    assert not (tmp_path / "cli").exists()


def test_naming_and_merging_a_cluster_through_both_replicas_at_once(tmp_path: Path, pg_url: str) -> None:
    """Naming the same cluster on both replicas at once made two subjects (and one replica rolled forward the
    other's naming still in progress); opposite merges swapped the two clusters. Now: one wins, one 404s."""
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np

    from service.photos.types import NewObservation

    settings: dict[str, Any] = {"database_url": pg_url, "photo_library": True, "photo_recluster_interval_s": 0}
    a, b = (create_app(Settings(data=tmp_path / n, **settings), analyzer_factory=no_analyzer) for n in "ab")
    local = {"base_url": "http://127.0.0.1:8000", "client": ("127.0.0.1", 50000)}
    rng = np.random.default_rng(0)

    def cluster_of(tag: str) -> int:
        """A new cluster of 3 faces (3 photos), far from every other."""
        centre, ids = rng.standard_normal(128), []
        for i in range(3):
            e = centre + rng.standard_normal(128) * 0.02
            face = NewObservation((e / np.linalg.norm(e)).astype(np.float32), "m", {"x": 0, "y": 0}, {})
            ids.append(a.state.photos.add_faces(sha256=f"{tag}-{i}", external_id=None, faces=[face]).faces[0].id)
        clusters = {f.cluster_id for f in a.state.photos.store.get_faces(ids)}
        assert len(clusters) == 1
        return int(clusters.pop())

    with TestClient(a, **local) as ca, TestClient(b, **local) as cb, ThreadPoolExecutor(2) as pool:  # type: ignore[arg-type]

        def both(path_a: str, body_a: dict[str, Any], path_b: str, body_b: dict[str, Any]) -> list[Any]:
            return list(pool.map(lambda c: c[0].post(c[1], json=c[2]), [(ca, path_a, body_a), (cb, path_b, body_b)]))

        for n in range(8):
            cid = cluster_of(f"name{n}")
            before = len(ca.get("/v1/subjects", params={"limit": 500}).json()["items"])
            answers = both(f"/v1/clusters/{cid}/name", {"name": "A"}, f"/v1/clusters/{cid}/name", {"name": "B"})
            assert sorted(r.status_code for r in answers) == [200, 404], [r.text for r in answers]
            after = len(cb.get("/v1/subjects", params={"limit": 500}).json()["items"])
            assert after == before + 1, f"round {n}: {after - before} subjects made"
        for n in range(8):
            x, y = cluster_of(f"x{n}"), cluster_of(f"y{n}")
            answers = both(f"/v1/clusters/{x}/merge", {"cluster_id": y}, f"/v1/clusters/{y}/merge", {"cluster_id": x})
            assert sorted(r.status_code for r in answers) == [200, 404], [r.text for r in answers]
            merged = next(r.json() for r in answers if r.status_code == 200)
            assert merged["size"] == 6 and cb.get(f"/v1/clusters/{merged['id']}").json()["size"] == 6
        assert a.state.photos.store.pending_namings() == []


def test_a_stream_changed_through_one_replica_is_restarted_by_the_one_reading_it(tmp_path: Path, pg_url: str) -> None:
    """``PATCH /v1/streams/{id}`` on the replica that does not read the stream: the reader's lease thread (every
    5 s) restarts its worker with the new URL and fps under the same id; a new name alone is taken without a
    restart; a change through the reader restarts it at once; a camera another stream reads is a 409 anywhere."""
    a, b = _app(tmp_path, pg_url, "a"), _app(tmp_path, pg_url, "b")
    local = {"base_url": "http://127.0.0.1:8000", "client": ("127.0.0.1", 50000)}
    with TestClient(a, **local) as ca, TestClient(b, **local) as cb:  # type: ignore[arg-type]
        created = ca.post("/v1/streams", json={"name": "door", "url": "rtsp://u:old@127.0.0.1:9/door", "fps": 1.0})
        assert created.status_code == 201, created.text
        sid = created.json()["id"]
        yard = cb.post("/v1/streams", json={"name": "yard", "url": "rtsp://127.0.0.1:9/yard", "fps": 1.0}).json()
        for replica in (a, b):
            replica.state.media.streams.sync()

        def worker_of(replica: Any) -> Any:
            return next((w for w in replica.state.media.streams.workers() if w.cfg.id == sid), None)

        [(reader, c_reader), (other, c_other)] = sorted([(a, ca), (b, cb)], key=lambda rc: worker_of(rc[0]) is None)
        first = worker_of(reader)
        assert first is not None and worker_of(other) is None

        r = c_other.patch(f"/v1/streams/{sid}", json={"url": "rtsp://u:new@127.0.0.1:9/door2", "fps": 2.0})
        assert r.status_code == 200, r.text
        assert (r.json()["id"], r.json()["url"], r.json()["fps"]) == (sid, "rtsp://u:***@127.0.0.1:9/door2", 2.0)
        second = _until(lambda: (w := worker_of(reader)) is not first and w, timeout_s=15.0)
        assert (second.cfg.url, second.cfg.fps, second.source) == (
            "rtsp://u:new@127.0.0.1:9/door2",
            2.0,
            f"stream:{sid}",
        )
        assert first.state == "stopped" and worker_of(other) is None

        assert c_other.patch(f"/v1/streams/{sid}", json={"name": "front door"}).status_code == 200
        _until(lambda: worker_of(reader).cfg.name == "front door", timeout_s=15.0)
        assert worker_of(reader) is second  # not reconnected

        assert c_reader.patch(f"/v1/streams/{sid}", json={"fps": 3.0}).status_code == 200
        third = worker_of(reader)  # at once: no renewal waited for
        assert third is not second and third.cfg.fps == 3.0 and second.state == "stopped"

        r = c_other.patch(f"/v1/streams/{sid}", json={"url": "rtsp://x:y@127.0.0.1:9/yard"})
        assert r.status_code == 409 and yard["id"] in r.json()["error"]["message"], r.text
        assert ca.get(f"/v1/streams/{sid}").json()["url"] == "rtsp://u:***@127.0.0.1:9/door2"
        for stream_id in (sid, yard["id"]):
            assert cb.delete(f"/v1/streams/{stream_id}").status_code == 204
