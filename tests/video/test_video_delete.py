"""``DELETE /v1/videos/{id}`` removes the job's upload from this data dir only: a row restored from a backup of
another data dir (or made by another replica) names a path outside it, which must not be deleted."""

from __future__ import annotations

from pathlib import Path

from tests.service.fakes import FakeAnalyzer, app_with, local
from tests.service.helpers import wait_until


def test_deleting_a_job_removes_its_upload_here_and_nothing_elsewhere(tmp_path: Path) -> None:
    app = app_with(tmp_path, lambda s: FakeAnalyzer(), video_keep_uploads=True)
    with local(app) as client:
        wait_until(lambda: client.get("/readyz").status_code == 200)
        jobs = app.state.media.jobs
        elsewhere = tmp_path / "old-data" / "uploads" / "v1.video"  # where the row says, from the old data dir
        elsewhere.parent.mkdir(parents=True)
        elsewhere.write_bytes(b"another data dir's video")
        job = jobs.create("v1", filename="door.mp4", path=elsewhere, fps=None, size=24)
        jobs.update(job.id, status="done", tracks=[])
        here = jobs.uploads / "v1.video"
        here.parent.mkdir(parents=True, exist_ok=True)
        here.write_bytes(b"this data dir's copy")
        assert client.delete("/v1/videos/v1").status_code == 204
        assert not here.exists(), "the job's upload in this data dir was kept"
        assert elsewhere.read_bytes() == b"another data dir's video", "a file outside the data dir was deleted"
