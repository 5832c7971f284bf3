"""Video file jobs: stored in a :class:`~service.video.jobstore.JobStore` (``<data>/videos.db``, or the shared
database), run one at a time by this process's :class:`JobRunner`.

A job is ``queued`` when its upload is on disk, ``running`` while one worker thread reads it, then ``done``
(with one entry per track) or ``failed`` (with a message). A job never vanishes: after a restart, jobs that
were queued or running are queued again and re-processed from the start (their events have stable ids, so
nothing is recorded twice), or fail with a message when their upload is gone. Uploads are deleted after
processing unless ``keep`` (``FACEREC_VIDEO_KEEP_UPLOADS``).
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from pathlib import Path
from typing import Any

from embeddings import FaceAnalyzer
from embeddings.images import DEFAULT_MAX_PIXELS
from service.events.recorder import event_of, video_event_id
from service.gallery.errors import StorageUnavailable, SubjectNotFound
from service.video.decode import (
    NATIVE_FPS,
    FrameClock,
    VideoError,
    check_complete,
    info,
    open_capture,
    sample_frames,
)
from service.video.deps import FrameDeps
from service.video.jobstore import Job, JobStore
from service.video.pipeline import TrackDecision, TrackPipeline, for_period

log = logging.getLogger("facerec.video")

ORPHAN_IDLE_S = 900.0
"""An upload file with no job row is deleted once untouched this long (s): long past any upload still streaming."""
STORE_RETRY_S = 1.0
"""How long the runner waits after its job or event store failed before it tries again, seconds."""
SWEEP_INTERVAL_S = 600.0
"""How often the runner looks for such files (and once at start), seconds."""


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


class JobRunner:
    """One thread running queued jobs in order; each frame's work passes ``gate`` (the shared CPU budget).
    A video whose frames are over ``max_pixels`` (width x height, as photos: ``FACEREC_MAX_PIXELS``) fails."""

    def __init__(
        self,
        store: JobStore,
        deps: FrameDeps,
        *,
        keep_uploads: bool,
        default_fps: float,
        max_pixels: int = DEFAULT_MAX_PIXELS,
    ) -> None:
        self.store, self.deps = store, deps
        self.keep_uploads, self.default_fps = keep_uploads, default_fps
        self.max_pixels = max_pixels
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._cancelled: set[str] = set()  # the running job, once deleted (never any other id: see cancel)
        self._running: str | None = None
        self._lock = threading.Lock()
        self._interrupted: set[str] = set()
        self._thread = threading.Thread(target=self._run, name="facerec-video-jobs", daemon=True)

    def start(self) -> JobRunner:
        self.store.recover()
        self.sweep()
        self._thread.start()
        return self

    def sweep(self) -> int:
        """Delete this data dir's orphaned uploads (:meth:`JobStore.orphan_uploads`); how many."""
        try:
            orphans = self.store.orphan_uploads(idle_s=ORPHAN_IDLE_S)
        except Exception as e:  # the database away: the next sweep tries again
            log.warning("video uploads: looking for orphaned files failed: %s", e)
            return 0
        deleted = 0
        for path in orphans:
            try:
                path.unlink(missing_ok=True)
                deleted += 1
            except OSError as e:  # a read-only or failing disk: the next sweep tries again
                log.warning("video uploads: could not delete the orphaned file %s: %s", path.name, e)
        if deleted:
            log.info("video uploads: deleted %d file(s) with no job (deleted elsewhere, cut by a crash)", deleted)
        return deleted

    def wake(self) -> None:
        self._wake.set()

    def cancel(self, job_id: str) -> None:
        """Stop a running job at its next frame (it is being deleted); any other id is ignored (a queued job is
        deleted with its row, and an id kept here for ever would grow the memory with every deletion)."""
        with self._lock:
            if job_id == self._running:
                self._cancelled.add(job_id)

    def close(self, timeout_s: float = 10.0) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout_s)

    def _run(self) -> None:
        swept = time.monotonic()
        while not self._stop.is_set():
            if time.monotonic() - swept > SWEEP_INTERVAL_S:
                self.sweep()
                swept = time.monotonic()
            job: Job | None = None
            try:
                self._requeue_interrupted()
                analyzer = self.deps.analyzer()
                job = self.store.next_queued() if analyzer is not None else None
                if job is None or analyzer is None:
                    self._wake.wait(1.0)
                    self._wake.clear()
                    continue
                self._run_one(job, analyzer)
            except Exception as exc:  # the store away (a database restarting): the runner waits for it
                log.warning("video jobs: the job or event store failed (%s); retrying in %.0f s", exc, STORE_RETRY_S)
                if job is not None:
                    self._interrupted.add(job.id)
                self._stop.wait(STORE_RETRY_S)

    def _requeue_interrupted(self) -> None:
        """Queue again the jobs whose processing a store failure cut (they run again from the start; their
        events have stable ids, so none is recorded twice)."""
        for job_id in list(self._interrupted):
            self.store.update(job_id, status="queued", progress=0.0, error=None)
            self._interrupted.discard(job_id)

    def _run_one(self, job: Job, analyzer: FaceAnalyzer) -> None:
        """:meth:`_process` ``job``, which :meth:`cancel` may stop meanwhile."""
        with self._lock:
            self._running = job.id
        try:
            self._process(job, analyzer)
        finally:
            with self._lock:
                self._running = None
                self._cancelled.discard(job.id)

    def _process(self, job: Job, analyzer: FaceAnalyzer) -> None:
        if not self.store.update(job.id, status="running", progress=0.0, error=None):
            Path(job.path).unlink(missing_ok=True)  # deleted since it was picked (perhaps through another replica,
            return  # which removed its own data dir's upload only)
        try:
            decisions, duration = self._read(job, analyzer)
        except VideoError as exc:
            self._end(job, status="failed", error=str(exc))
            return
        except _Stopped:  # deleted, or shutting down (then it is requeued by recover() at the next start)
            if job.id in self._cancelled:
                Path(job.path).unlink(missing_ok=True)
            return
        except StorageUnavailable:  # the gallery away: not the video's fault, the job runs again (_run)
            raise
        except Exception as exc:
            log.exception("video job %s failed", job.id)
            self._end(job, status="failed", error=f"processing failed: {type(exc).__name__}")
            return
        decisions = self._as_gallery_stands(decisions)
        if not self.store.update(job.id, progress=0.99):  # deleted while it ran, since its last progress check
            Path(job.path).unlink(missing_ok=True)
            return
        source = f"video:{job.id}"
        events = [event_of(d, source=source, event_id=video_event_id(job.id, d.track_id)) for d in decisions]
        self.deps.recorder.record(events)
        self._end(job, status="done", tracks=[track_entry(d) for d in decisions], duration_s=duration, progress=1.0)

    def _as_gallery_stands(self, decisions: list[TrackDecision]) -> list[TrackDecision]:
        """The decisions as the gallery stands now: a job's tracks and events are stored when it ends, so those of
        a person erased while it ran are dropped (the erasure could only drop what was stored) and a person renamed
        meanwhile is shown under the new name. :class:`StorageUnavailable` while the gallery is away."""
        gallery = self.deps.gallery()
        names: dict[str, str | None] = {}  # subject id -> its name now, None when erased
        for sid in {d.vote.subject_id for d in decisions if d.vote.subject_id is not None}:
            try:
                names[sid] = gallery.get_subject(sid).name
            except SubjectNotFound:
                names[sid] = None
        kept = []
        for d in decisions:
            if d.vote.subject_id is None:
                kept.append(d)
            elif (name := names[d.vote.subject_id]) is not None:
                kept.append(dataclasses.replace(d, vote=dataclasses.replace(d.vote, name=name)))
        return kept

    def _read(self, job: Job, analyzer: FaceAnalyzer) -> tuple[list[TrackDecision], float]:
        try:
            cap = open_capture(job.path)
        except VideoError as exc:  # its message names the upload's path on this server: say what it means
            raise VideoError("the file is not a video FFmpeg can open, or it is corrupt") from exc
        try:
            meta = info(cap)
            self._check_size(meta.width, meta.height)  # from the header: nothing decoded yet
            fps = job.fps or self.default_fps
            config = for_period(self.deps.config(), max(1.0 / fps, 1.0 / (meta.fps or NATIVE_FPS)))
            pipe = TrackPipeline(analyzer, self.deps.gallery, config)
            decisions: list[TrackDecision] = []
            last_update = time.monotonic()
            clock = FrameClock()
            for t, rgb in sample_frames(cap, fps, clock):
                if self._stop.is_set() or job.id in self._cancelled:
                    raise _Stopped
                self._check_size(rgb.shape[1], rgb.shape[0])  # a header may understate them
                with self.deps.gate:
                    decisions.extend(pipe.process(rgb, t).decisions)
                if time.monotonic() - last_update > 1.0:  # a duration the header does not give: progress stays 0
                    done = min(t / meta.duration_s, 0.99) if meta.duration_s > 0 else 0.0
                    if not self._progress(job.id, done):
                        self._cancelled.add(job.id)  # deleted, perhaps through another replica
                        raise _Stopped
                    last_update = time.monotonic()
            decisions.extend(pipe.finish())
        finally:
            cap.release()
        check_complete(meta, clock)
        return sorted(decisions, key=lambda d: d.first_s), clock.last_s  # the last frame read, sampled or not

    def _check_size(self, width: int, height: int) -> None:
        """:class:`VideoError` when frames of ``width`` x ``height`` px are over ``max_pixels``: a small file of
        huge frames (one 16000x16000 frame is 768 MB decoded) would take GBs of the server's memory."""
        if width * height > self.max_pixels:
            raise VideoError(
                f"the video's frames are {width}x{height} px, over the limit of {self.max_pixels / 1e6:.1f} MP "
                "(FACEREC_MAX_PIXELS)"
            )

    def _progress(self, job_id: str, progress: float) -> bool:
        """Show a running job's progress (0 to 1); False when the job is gone. A store failure does not stop
        the job (its outcome is stored at its end)."""
        try:
            return self.store.update(job_id, progress=progress)
        except Exception as exc:
            log.warning("video job %s: its progress could not be stored (%s)", job_id, exc)
            return True

    def _end(self, job: Job, **values: Any) -> None:
        self.store.update(job.id, **values)
        if not self.keep_uploads:
            Path(job.path).unlink(missing_ok=True)


class _Stopped(Exception):
    pass
