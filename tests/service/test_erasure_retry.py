"""An erasure that a store refuses half-way is finished by the same call again, and audited then (fake analyzer,
real stores: the gallery, events.db and the audit log in a tmp data dir)."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from service.audit import AuditLog
from service.events.store import Event
from tests.service.fakes import FakeAnalyzer, app_with, local


def test_a_refused_erasure_is_finished_by_the_retry_and_audited(tmp_path: Path) -> None:
    """events.db refusing writes used to come after the subject was erased: a 503 saying "nothing was stored",
    then every retry a 404, the person's events kept for good and no subject.delete record."""
    app = app_with(tmp_path, lambda s: FakeAnalyzer())
    with local(app, raise_server_exceptions=False) as client:
        sid = client.post("/v1/subjects", json={"name": "Ada"}).json()["id"]
        events = app.state.media.events
        seen = Event("e1", time.time(), "stream:cam", 1, sid, "Ada", 0.3, None, 0.0, 1.0, 3)
        events.add([seen], outbox=False)
        writer = events._file._db
        events._file._db = sqlite3.connect(  # what SQLite falls back to when it cannot write the file
            f"file:{events.path}?mode=ro", uri=True, check_same_thread=False, isolation_level=None
        )
        refused = client.delete(f"/v1/subjects/{sid}")
        assert refused.status_code == 503 and refused.json()["error"]["code"] == "storage_unavailable"
        assert client.get(f"/v1/subjects/{sid}").status_code == 200  # still there: the erasure can be retried
        events._file._db.close()
        events._file._db = writer
        assert client.delete(f"/v1/subjects/{sid}").status_code == 204
        assert client.get(f"/v1/subjects/{sid}").status_code == 404
        assert events.query()[0] == []
    actions = [(r["action"], r["target"]) for r in AuditLog(tmp_path / "data").tail(10)]
    assert actions == [("subject.create", {"subject_id": sid}), ("subject.delete", {"subject_id": sid})]


def test_an_event_recorded_while_the_subject_is_erased_is_erased_too(tmp_path: Path) -> None:
    """A camera that names the person between the erasure's first pass over the events and the subject's deletion
    leaves no event behind: the events are erased again once nothing can name the subject any more."""
    app = app_with(tmp_path, lambda s: FakeAnalyzer())
    with local(app) as client:
        sid = client.post("/v1/subjects", json={"name": "Ada"}).json()["id"]
        events, gallery = app.state.media.events, app.state.gallery
        delete_subject = gallery.delete_subject

        def seen_meanwhile(subject_id: str) -> None:
            events.add([Event("late", time.time(), "stream:cam", 1, sid, "Ada", 0.3, None, 0.0, 1.0, 3)], outbox=True)
            delete_subject(subject_id)

        gallery.delete_subject = seen_meanwhile
        assert client.delete(f"/v1/subjects/{sid}").status_code == 204
        assert events.query()[0] == [] and events.pending_count() == 0
