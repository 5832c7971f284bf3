"""Frames in, track decisions out: detect faces, track them, embed a track's best views once, vote.

Used alike by video jobs, live streams, ``facerec watch`` and the web page's live mode. Per frame the cost is
one detection plus one cheap alignment per face (with ``full_detect_s`` set, as live streams do, a frame
within that many seconds of the last full detection is searched only around the tracked faces,
:func:`service.video.regions.detect_near`); the encoder runs once per track (on its ``keep_best`` best
views), when the track has been seen in ``decide_frames`` frames, or when it ends if that is sooner. Tracks
seen in fewer than ``min_hits`` frames are dropped as noise. Not thread-safe: one pipeline per source.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from embeddings import Box, Detection, FaceAnalyzer, FaceDetector
from embeddings.quality import sharpness
from service.video.decision import Vote, vote
from service.video.regions import detect_near
from service.video.tracker import Track, Tracker


@dataclass(frozen=True, slots=True)
class TrackDecision:
    """One person seen: the track's id, its vote, when it was seen (source seconds) and in how many frames."""

    track_id: int
    vote: Vote
    first_s: float
    last_s: float
    frames: int


@dataclass(frozen=True, slots=True)
class LiveFace:
    """A face on the current frame: its track, box, velocity (px/s of its centre) and (once decided) identity;
    ``decided`` False = pending."""

    track_id: int
    box: Box
    decided: bool
    subject_id: str | None
    name: str | None
    velocity: tuple[float, float] = (0.0, 0.0)


@dataclass(frozen=True, slots=True)
class DueTrack:
    """A track to decide (``deferred`` pipelines): a snapshot of its best views' crops ``(N, 160, 160, 3)``."""

    track_id: int
    crops: npt.NDArray[np.uint8] = field(repr=False)
    first_s: float
    last_s: float
    frames: int


@dataclass
class FrameResult:
    """The faces on the frame; the tracks decided on it (or, ``deferred``, ``due`` to be decided)."""

    faces: list[LiveFace] = field(default_factory=list)
    decisions: list[TrackDecision] = field(default_factory=list)
    due: list[DueTrack] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class PipelineConfig:
    """``decide_frames``: frames after which a track is decided; ``min_hits``: fewer is noise; ``max_age_s``:
    unseen this long ends a track; ``keep_best``: views embedded per track; thresholds as identify's;
    ``detector``: the face detector of the frames (default: the analyzer's); ``full_detect_s``: 0 = the whole
    frame is searched for faces every frame, else at least every so many seconds of source time and, on the
    frames between, only around the tracked faces (new faces are found by the next full search; while a
    tracked face has been seen in only one frame, its motion is unknown and every frame is searched whole)."""

    fixed_threshold: float
    max_fir: float | None
    decide_frames: int = 5
    min_hits: int = 3
    max_age_s: float = 1.0
    keep_best: int = 5
    detector: FaceDetector | None = None
    full_detect_s: float = 0.0


MISSED_SAMPLES = 2.5
"""A track outlives at least this many sampling periods unseen: at a low sampling rate (``fps`` under
1 / ``FACEREC_TRACK_MAX_AGE_S``, or a time-lapse file) the next frame comes after ``max_age_s``, and every
track would end after one frame, as noise."""


def for_period(config: PipelineConfig, period_s: float) -> PipelineConfig:
    """``config`` for frames ``period_s`` seconds apart (the sampling period: ``1 / fps``, or the source's
    own frame period if longer): ``max_age_s`` is at least :data:`MISSED_SAMPLES` periods."""
    return dataclasses.replace(config, max_age_s=max(config.max_age_s, MISSED_SAMPLES * period_s))


class TrackPipeline:
    """See the module docstring. ``gallery`` is a callable so that a service can swap its gallery meanwhile.

    ``deferred``: :meth:`process` does not encode; it returns the tracks ``due`` for a decision, which another
    thread decides with :meth:`decide` (the only method that may run beside :meth:`process`), so that the
    encoder of one frame's decisions runs while the next frames are searched for faces (live streams)."""

    def __init__(
        self, analyzer: FaceAnalyzer, gallery: Callable[[], Any], config: PipelineConfig, *, deferred: bool = False
    ) -> None:
        self.analyzer = analyzer
        self.gallery = gallery
        self.config = config
        self.deferred = deferred
        self._lock = threading.Lock()
        self.tracker = Tracker(max_age_s=config.max_age_s, keep_best=config.keep_best)
        self._decided: dict[int, Vote] = {}
        self._full_at: float | None = None
        self.full_detections = self.region_detections = 0
        """How many frames were searched whole, and how many only around their tracked faces."""

    def _detect(self, rgb: npt.NDArray[np.uint8], t: float) -> list[Detection]:
        detector = self.config.detector or self.analyzer.detector
        every = self.config.full_detect_s
        tracks = self.tracker.tracks
        tracked = [tr.predicted(t) for tr in tracks]
        # a face seen once has no velocity yet: at a few frames/s it has moved out of its region by the next frame
        moving = all(tr.hits >= 2 for tr in tracks)
        if every > 0 and tracked and moving and self._full_at is not None and 0.0 <= t - self._full_at < every:
            self.region_detections += 1
            return detect_near(detector, rgb, tracked)
        self._full_at = t
        self.full_detections += 1
        return detector.detect(rgb)

    def process(self, rgb: npt.NDArray[np.uint8], t: float) -> FrameResult:
        """One upright RGB frame at source time ``t`` (s)."""
        detections = self._detect(rgb, t)
        crops = [self.analyzer.align(rgb, d) for d in detections]
        sharp = [sharpness(c) for c in crops]
        active, ended = self.tracker.update(t, detections, crops, sharp, (int(rgb.shape[1]), int(rgb.shape[0])))
        result = FrameResult()
        for track in active:
            if not track.decided and track.hits >= self.config.decide_frames:
                self._settle(track, result)
            v = self._decided.get(track.id)
            result.faces.append(
                LiveFace(
                    track.id,
                    track.box,
                    v is not None,
                    v.subject_id if v else None,
                    v.name if v else None,
                    track.velocity,
                )
            )
        self._end(ended, result)
        return result

    def finish(self) -> list[TrackDecision]:
        """Decide the tracks still open (the source ended), here and now even when ``deferred``."""
        result = FrameResult()
        self._end(self.tracker.finish(), result)
        return result.decisions + [self.decide(d) for d in result.due]

    def _end(self, ended: list[Track], result: FrameResult) -> None:
        for tr in ended:
            if not tr.decided and tr.hits >= self.config.min_hits:
                self._settle(tr, result)
        with self._lock:
            for tr in ended:
                self._decided.pop(tr.id, None)

    def _settle(self, track: Track, result: FrameResult) -> None:
        """Decide ``track`` now, or (``deferred``) add it to the frame's due tracks."""
        track.decided = True
        due = DueTrack(track.id, np.stack([v.crop for v in track.views]), track.first_t, track.last_t, track.hits)
        if self.deferred:
            result.due.append(due)
        else:
            result.decisions.append(self.decide(due))

    def decide(self, due: DueTrack) -> TrackDecision:
        """Embed a due track's views and vote; its faces show the identity from then on while it is tracked."""
        v = vote(
            self.analyzer.encode(due.crops),
            gallery=self.gallery(),
            model_id=self.analyzer.model_id,
            fixed_threshold=self.config.fixed_threshold,
            max_fir=self.config.max_fir,
        )
        with self._lock:
            if any(tr.id == due.track_id for tr in list(self.tracker.tracks)):
                self._decided[due.track_id] = v
        return TrackDecision(due.track_id, v, due.first_s, due.last_s, due.frames)
