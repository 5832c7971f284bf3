"""Graceful shutdown of a real ``facerec serve``: SIGTERM while a request is in flight.

The identify request's body is sent slowly, and the SIGTERM is sent from inside it, so the request is
certainly in flight when the signal lands. Then: new connections are refused, the in-flight request still
completes with 200, the process exits 0 within FACEREC_SHUTDOWN_TIMEOUT_S, and the gallery's snapshot was
saved on the way out (the face enrolled before the signal is in its header).
"""

from __future__ import annotations

import os
import signal
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from service.gallery.snapshot import read_header
from tests.service.helpers import ENROLLED, images
from tests.service.server import Server

pytestmark = pytest.mark.slow  # real servers with the real weights

SHUTDOWN_TIMEOUT_S = 8


def refused(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            return False
    except ConnectionRefusedError:
        return True


def test_sigterm_finishes_in_flight_requests_saves_the_snapshot_and_exits(tmp_path: Path, dataset: Path) -> None:
    data = tmp_path / "data"
    server = Server(data, env={"FACEREC_SHUTDOWN_TIMEOUT_S": str(SHUTDOWN_TIMEOUT_S)}).start()
    try:
        proc = server.proc
        assert proc is not None
        person = ENROLLED[0]
        sid = httpx.post(f"{server.url}/v1/subjects", json={"name": person}).json()["id"]
        enrol_image, probe = images(dataset, "train", person)[0], images(dataset, "val", person)[0]
        r = httpx.post(f"{server.url}/v1/subjects/{sid}/faces", files={"images": enrol_image.read_bytes()}, timeout=60)
        assert r.status_code == 201, r.text
        face_id = r.json()["faces"][0]["id"]
        assert not list((data / "index").glob("*.snap"))  # nothing saved yet: the periodic save is minutes away

        boundary = uuid.uuid4().hex
        body = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="p.jpg"\r\n'
            f"Content-Type: image/jpeg\r\n\r\n".encode()
            + probe.read_bytes()
            + f"\r\n--{boundary}--\r\n".encode()
        )
        events: dict[str, float | bool] = {}

        def slow_body() -> Iterator[bytes]:
            yield body[:100]
            time.sleep(0.3)
            os.kill(proc.pid, signal.SIGTERM)
            events["sigterm"] = time.monotonic()
            time.sleep(1.0)
            events["refused"] = refused(server.port)
            events["alive"] = proc.poll() is None
            yield body[100:]

        r = httpx.post(
            f"{server.url}/v1/identify",
            content=slow_body(),
            headers={"Content-Type": f"multipart/form-data; boundary={boundary}", "Content-Length": str(len(body))},
            timeout=60,
        )
        assert events["refused"] is True and events["alive"] is True
        assert r.status_code == 200, r.text
        (face,) = r.json()["faces"]
        assert face["match"] is not None and face["match"]["subject_id"] == sid

        rc = proc.wait(timeout=SHUTDOWN_TIMEOUT_S + 15)
        assert rc == 0, server.log.read_text()[-3000:]
        assert time.monotonic() - float(events["sigterm"]) < SHUTDOWN_TIMEOUT_S + 15
        (snap,) = list((data / "index").glob("*.snap"))
        header, _ = read_header(snap)
        assert header["max_face_id"] == face_id, header
        assert snap.stat().st_mtime >= time.time() - 120
    finally:
        server.stop()


def test_sigterm_on_an_idle_server_exits_promptly(tmp_path: Path) -> None:
    """No request in flight: the process exits 0 quickly (it does not sit out the whole timeout)."""
    server = Server(tmp_path / "data", env={"FACEREC_SHUTDOWN_TIMEOUT_S": "30"}).start()
    try:
        proc = server.proc
        assert proc is not None
        with httpx.Client(base_url=server.url) as keep_alive:  # an idle keep-alive connection does not hold it up
            assert keep_alive.get("/healthz").status_code == 200
            start = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=20) == 0
            assert time.monotonic() - start < 10
    finally:
        server.stop()


def test_a_stalled_request_does_not_hold_shutdown_past_the_bound(tmp_path: Path) -> None:
    """A client that never finishes its body: the server waits FACEREC_SHUTDOWN_TIMEOUT_S, then exits 0."""
    bound = 3
    server = Server(tmp_path / "data", env={"FACEREC_SHUTDOWN_TIMEOUT_S": str(bound)}).start()
    try:
        proc = server.proc
        assert proc is not None
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as stalled:
            stalled.sendall(
                b"POST /v1/identify HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Content-Length: 1000\r\n\r\n{"
            )
            time.sleep(0.3)
            start = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=bound + 20) == 0
            elapsed = time.monotonic() - start
        assert bound - 0.5 <= elapsed < bound + 15, elapsed
    finally:
        server.stop()
