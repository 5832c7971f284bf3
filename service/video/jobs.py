"""Video file jobs: stored in ``<data>/videos.db`` (SQLite, WAL, synchronous FULL), run one at a time.

A job is ``queued`` when its upload is on disk, ``running`` while one worker thread reads it, then ``done``
(with one entry per track) or ``failed`` (with a message). A job never vanishes: after a restart, jobs that
were queued or running are queued again and re-processed from the start (their events have stable ids, so
nothing is recorded twice), or fail with a message when their upload is gone. Uploads are deleted after
processing unless ``keep`` (``FACEREC_VIDEO_KEEP_UPLOADS``).
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from embeddings import FaceAnalyzer
from service.events.recorder import event_of, video_event_id
from service.video.decode import VideoError, info, open_capture, sample_frames
from service.video.deps import FrameDeps
from service.video.pipeline import TrackDecision, TrackPipeline

log = logging.getLogger("facerec.video")

VIDEOS_FILE = "videos.db"
UPLOADS_DIR = "uploads"
STATUSES = ("queued", "running", "done", "failed")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    filename TEXT NOT NULL,
    path TEXT NOT NULL,
    fps REAL,
    bytes INTEGER NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    progress REAL NOT NULL DEFAULT 0,
    duration_s REAL,
    error TEXT,
    tracks TEXT
);
"""
_COLS = "id, status, filename, path, fps, bytes, created_at, updated_at, progress, duration_s, error, tracks"


class JobNotFound(LookupError):
    """No video job with this id."""


@dataclass
class Job:
    """A video job. ``progress`` in [0, 1]; ``tracks`` one dict per person seen (when done); times Unix s."""

    id: str
    status: str
    filename: str
    path: str
    fps: float | None
    bytes: int
    created_at: float
    updated_at: float
    progress: float = 0.0
    duration_s: float | None = None
    error: str | None = None
    tracks: list[dict[str, Any]] | None = field(default=None)


def track_entry(d: TrackDecision) -> dict[str, Any]:
    """The API's per-track entry of a finished video."""
    v = d.vote
    return {
        "track_id": d.track_id,
        "subject_id": v.subject_id,
        "name": v.name,
        "first_s": round(d.first_s, 3),
        "last_s": round(d.last_s, 3),
        "frames": d.frames,
        "distance": v.distance,
        "estimated_false_identification_rate": v.estimated_fir,
    }


class JobStore:
    """The jobs table; safe to share between threads."""

    def __init__(self, data_dir: Path) -> None:
        self.uploads = data_dir / UPLOADS_DIR
        self.uploads.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(data_dir / VIDEOS_FILE, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)

    def new_path(self) -> tuple[str, Path]:
        """A fresh job id and the path its upload is written to."""
        job_id = uuid.uuid4().hex
        return job_id, self.uploads / f"{job_id}.video"

    def create(self, job_id: str, *, filename: str, path: Path, fps: float | None, size: int) -> Job:
        now = time.time()
        with self._lock:
            self._db.execute(
                "INSERT INTO jobs (id, status, filename, path, fps, bytes, created_at, updated_at) "
                "VALUES (?, 'queued', ?, ?, ?, ?, ?, ?)",
                (job_id, filename, str(path), fps, size, now, now),
            )
        return self.get(job_id)

    def get(self, job_id: str) -> Job:
        with self._lock:
            row = self._db.execute(f"SELECT {_COLS} FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if row is None:
            raise JobNotFound(job_id)
        return _job(row)

    def list(self, limit: int = 100) -> list[Job]:
        with self._lock:
            rows = self._db.execute(f"SELECT {_COLS} FROM jobs ORDER BY created_at DESC LIMIT ?", (limit,)).fetchall()
        return [_job(r) for r in rows]

    def next_queued(self) -> Job | None:
        with self._lock:
            row = self._db.execute(
                f"SELECT {_COLS} FROM jobs WHERE status = 'queued' ORDER BY created_at LIMIT 1"
            ).fetchone()
        return None if row is None else _job(row)

    def update(self, job_id: str, **values: Any) -> None:
        if "tracks" in values and values["tracks"] is not None:
            values["tracks"] = json.dumps(values["tracks"])
        values["updated_at"] = time.time()
        sets = ", ".join(f"{k} = ?" for k in values)
        with self._lock:
            self._db.execute(f"UPDATE jobs SET {sets} WHERE id = ?", (*values.values(), job_id))

    def delete(self, job_id: str) -> Job:
        job = self.get(job_id)
        with self._lock:
            self._db.execute("DELETE FROM jobs WHERE id = ?", (job_id,))
        return job

    def recover(self) -> None:
        """After a restart: requeue interrupted jobs whose upload exists; fail the others visibly."""
        with self._lock:
            rows = self._db.execute(f"SELECT {_COLS} FROM jobs WHERE status IN ('queued', 'running')").fetchall()
        for job in map(_job, rows):
            if Path(job.path).is_file():
                self.update(job.id, status="queued", progress=0.0)
            else:
                self.update(job.id, status="failed", error="the upload of this job is gone (interrupted by a restart)")

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _job(row: tuple[Any, ...]) -> Job:
    job = Job(*row[:11])
    job.tracks = json.loads(row[11]) if row[11] else None
    return job


class JobRunner:
    """One thread running queued jobs in order; each frame's work passes ``gate`` (the shared CPU budget)."""

    def __init__(
        self,
        store: JobStore,
        deps: FrameDeps,
        *,
        keep_uploads: bool,
        default_fps: float,
    ) -> None:
        self.store, self.deps, self.keep_uploads, self.default_fps = store, deps, keep_uploads, default_fps
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._cancelled: set[str] = set()
        self._thread = threading.Thread(target=self._run, name="facerec-video-jobs", daemon=True)

    def start(self) -> JobRunner:
        self.store.recover()
        self._thread.start()
        return self

    def wake(self) -> None:
        self._wake.set()

    def cancel(self, job_id: str) -> None:
        """Stop a running job at its next frame (it is being deleted)."""
        self._cancelled.add(job_id)

    def close(self, timeout_s: float = 10.0) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout_s)

    def _run(self) -> None:
        while not self._stop.is_set():
            analyzer = self.deps.analyzer()
            job = self.store.next_queued() if analyzer is not None else None
            if job is None or analyzer is None:
                self._wake.wait(1.0)
                self._wake.clear()
                continue
            self._process(job, analyzer)

    def _process(self, job: Job, analyzer: FaceAnalyzer) -> None:
        self.store.update(job.id, status="running", progress=0.0, error=None)
        try:
            decisions, duration = self._read(job, analyzer)
        except VideoError as exc:
            self._end(job, status="failed", error=str(exc))
            return
        except _Stopped:
            return  # deleted, or shutting down (then it is requeued by recover() at the next start)
        except Exception as exc:
            log.exception("video job %s failed", job.id)
            self._end(job, status="failed", error=f"processing failed: {type(exc).__name__}")
            return
        source = f"video:{job.id}"
        events = [event_of(d, source=source, event_id=video_event_id(job.id, d.track_id)) for d in decisions]
        self.deps.recorder.record(events)
        self._end(job, status="done", tracks=[track_entry(d) for d in decisions], duration_s=duration, progress=1.0)

    def _read(self, job: Job, analyzer: FaceAnalyzer) -> tuple[list[TrackDecision], float]:
        try:
            cap = open_capture(job.path)
        except VideoError as exc:  # its message names the upload's path on this server: say what it means
            raise VideoError("the file is not a video FFmpeg can open, or it is corrupt") from exc
        try:
            meta = info(cap)
            pipe = TrackPipeline(analyzer, self.deps.gallery, self.deps.config())
            decisions: list[TrackDecision] = []
            last_update = time.monotonic()
            t = 0.0
            for t, rgb in sample_frames(cap, job.fps or self.default_fps):
                if self._stop.is_set() or job.id in self._cancelled:
                    raise _Stopped
                with self.deps.gate:
                    decisions.extend(pipe.process(rgb, t).decisions)
                if time.monotonic() - last_update > 1.0 and meta.duration_s > 0:
                    self.store.update(job.id, progress=min(t / meta.duration_s, 0.99))
                    last_update = time.monotonic()
            decisions.extend(pipe.finish())
        finally:
            cap.release()
        if meta.duration_s > 0 and t < 0.9 * meta.duration_s - 1.0 / max(meta.fps, 1.0) * 2:
            raise VideoError(
                f"the video ended at {t:.1f} s of the {meta.duration_s:.1f} s its header announces: "
                "it is truncated or corrupt"
            )
        return sorted(decisions, key=lambda d: d.first_s), t

    def _end(self, job: Job, **values: Any) -> None:
        self.store.update(job.id, **values)
        if not self.keep_uploads:
            Path(job.path).unlink(missing_ok=True)


class _Stopped(Exception):
    pass
