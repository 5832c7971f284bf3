"""The CLI's backends without a server: bulk enrolment through a backend that refuses some images or goes
away, and the remote backend waiting out 429s."""

from __future__ import annotations

from pathlib import Path
from typing import Any, SupportsIndex

import httpx
import pytest


def test_remote_style_enrolment_survives_a_refused_image_and_leaves_no_empty_subject(tmp_path: Path) -> None:
    from service.commands.enroll import run_enrollment
    from service.commands.errors import CliError

    class Backend:
        def __init__(self) -> None:
            self.subjects: dict[str, dict[str, Any]] = {}
            self.deleted: list[str] = []

        def all_subjects(self) -> list[dict[str, Any]]:
            return list(self.subjects.values())

        def create_subject(self, name: str) -> dict[str, Any]:
            sid = f"id{len(self.subjects)}"
            self.subjects[sid] = {"id": sid, "name": name}
            return self.subjects[sid]

        def delete_subject(self, subject_id: str) -> None:
            self.deleted.append(subject_id)
            del self.subjects[subject_id]

        def list_faces(self, subject_id: str) -> list[dict[str, Any]]:
            return []

        def enroll(self, subject_id: str, images: list[bytes], *, largest: bool) -> dict[str, Any]:
            if images[0].startswith(b"big"):
                raise CliError("POST -> 413 payload_too_large: too big", status=413, code="payload_too_large")
            if images[0].startswith(b"noface"):
                return {"faces": [], "rejected": [{"code": "no_face", "message": "no face"}]}
            return {"faces": [{"id": 1}], "rejected": []}

    folders: dict[str, list[Path]] = {}
    for person, files in {"good_one": [b"big1", b"ok"], "all_bad": [b"big2", b"noface"]}.items():
        (tmp_path / person).mkdir()
        folders[person] = []
        for i, content in enumerate(files):
            path = tmp_path / person / f"{i}.jpg"
            path.write_bytes(content)
            folders[person].append(path)
    backend = Backend()
    summary = run_enrollment(backend, folders, largest=False)  # type: ignore[arg-type]
    assert summary.enrolled == 1 and summary.subjects_created == 1
    assert sorted(r["code"] for r in summary.rejected) == [
        "no_face",
        "payload_too_large",
        "payload_too_large",
    ]
    assert [s["name"] for s in backend.subjects.values()] == ["good one"]
    assert len(backend.deleted) == 1 and summary.per_subject["all bad"]["id"] is None

    class Down(Backend):
        def enroll(self, subject_id: str, images: list[bytes], *, largest: bool) -> dict[str, Any]:
            raise CliError("cannot reach the server")

    with pytest.raises(CliError, match="cannot reach"):
        run_enrollment(Down(), folders, largest=False)  # type: ignore[arg-type]
    assert not any(s["name"] == "all bad" for s in backend.subjects.values())

    # an unreadable image (EIO) is one rejection; a folder whose name the API refuses is skipped whole
    (tmp_path / "carol").mkdir()
    (tmp_path / "carol" / "a.jpg").write_bytes(b"ok")
    (tmp_path / "carol" / "b.jpg").symlink_to("/proc/self/mem")  # reading it fails with an I/O error
    odd = {"carol": sorted((tmp_path / "carol").iterdir()), "___": [tmp_path / "carol" / "a.jpg"]}
    odd["x" * 250] = [tmp_path / "carol" / "a.jpg"]
    fresh = Backend()
    summary = run_enrollment(fresh, odd, largest=False)  # type: ignore[arg-type]
    assert [s["name"] for s in fresh.subjects.values()] == ["carol"] and summary.enrolled == 1
    assert sorted(r["code"] for r in summary.rejected) == ["invalid_name", "invalid_name", "unreadable"]

    class DiesMidFolder(Backend):
        def enroll(self, subject_id: str, images: list[bytes], *, largest: bool) -> dict[str, Any]:
            raise KeyboardInterrupt  # Ctrl-C after the folder's subject was created

    dying = DiesMidFolder()
    with pytest.raises(KeyboardInterrupt):
        run_enrollment(dying, {"dave": [tmp_path / "carol" / "a.jpg"]}, largest=False)  # type: ignore[arg-type]
    assert dying.subjects == {} and len(dying.deleted) == 1  # no empty subject left behind


def test_remote_backend_waits_out_429_then_succeeds() -> None:
    import httpx

    from service.commands.remote import RemoteBackend

    calls: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        if len(calls) < 3:
            return httpx.Response(
                429, headers={"Retry-After": "2"}, json={"error": {"code": "rate_limited", "message": "slow down"}}
            )
        return httpx.Response(200, json={"ok": True})

    backend = RemoteBackend("http://server.test", "k")
    backend.client = httpx.Client(base_url="http://server.test", transport=httpx.MockTransport(handler))
    slept: list[float | SupportsIndex] = []  # what backend._sleep (time.sleep) accepts
    backend._sleep = slept.append
    assert backend._call("GET", "/v1/subjects") == {"ok": True}
    assert len(calls) == 3 and slept == [2.0, 2.0]
