"""A small multi-face tracker: detections of consecutive frames are joined into tracks by optimal assignment.

The cost of joining a detection to a track is ``1 - score``, where the score is the larger of the IoU of the
detection's box with the track's box predicted by constant velocity and a proximity in [0, 0.5] from their
centre distance in units of the face size (a fast face at a low sampling rate overlaps its last box by a sliver,
or not at all; a track seen once, whose velocity is unknown, reaches further); pairs scoring under
``min_score`` are never joined. The assignment is
:func:`scipy.optimize.linear_sum_assignment`. A track's velocity is its first measured one, then a running
average.

Times are seconds on the source's clock (a video's timestamps, or a stream's clock that stops while it is
disconnected). A track ends when it has not been seen for ``max_age_s``. Each track keeps the ``keep_best``
best views of its face (aligned 160x160 crops, ranked by :func:`view_score`), so that embeddings are computed
on a few good frames rather than on every frame.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
from scipy.optimize import linear_sum_assignment

from embeddings import Box, Detection


@dataclass(frozen=True, slots=True)
class View:
    """One frame's view of a tracked face: its aligned crop, the time (s), the detection and its score."""

    t: float
    detection: Detection
    crop: npt.NDArray[np.uint8] = field(repr=False)
    score: float


@dataclass
class Track:
    """A face followed across frames. ``id`` is unique within one source, counting from 1."""

    id: int
    box: Box
    first_t: float
    last_t: float
    hits: int = 1
    velocity: tuple[float, float] = (0.0, 0.0)
    """Box centre velocity, pixels per second."""
    views: list[View] = field(default_factory=list)
    decided: bool = False

    def predicted(self, t: float) -> Box:
        """The box expected at time ``t`` by constant velocity."""
        dt = max(t - self.last_t, 0.0)
        return Box(
            self.box.x + self.velocity[0] * dt, self.box.y + self.velocity[1] * dt, self.box.width, self.box.height
        )


def view_score(detection: Detection, sharpness: float) -> float:
    """How good a view is for recognition: bigger, more confident and sharper faces score higher (unitless)."""
    size = min(detection.box.width, detection.box.height)
    return float(detection.confidence) * min(size, 160.0) / 160.0 * min(max(sharpness, 1.0) / 100.0, 1.0)


PROXIMITY_SIDES = 3.0
"""How far (face sides) from its predicted box a track's next face may be."""
FIRST_STEP_SIDES = 5.0
"""The same for a track seen once, whose velocity is not known yet (its prediction is where it was): a face
crossing a 640 px frame in 1.5 s at 4.5 frames/s moves about 3 sides of a 40 px face between frames."""


def match_score(track_box: Box, box: Box, reach: float = PROXIMITY_SIDES) -> float:
    """The larger of the boxes' IoU and their proximity ``0.5 * (1 - d / (reach * side))`` for a centre
    distance ``d`` under ``reach`` face sides, boxes of similar size (scale ratio within 2; else the proximity
    is 0). A face crossing the frame in 3 s at 5 frames/s moves about a face width between frames: a sliver of
    overlap must not score below none."""
    iou = track_box.iou(box)
    side = max(min(track_box.width, track_box.height), 1.0)
    ratio = max(box.width, 1.0) / max(track_box.width, 1.0)
    if not 0.5 <= ratio <= 2.0:
        return iou
    cx, cy = track_box.x + track_box.width / 2, track_box.y + track_box.height / 2
    dx, dy = box.x + box.width / 2 - cx, box.y + box.height / 2 - cy
    d = float(np.hypot(dx, dy))
    return max(iou, 0.5 * (1.0 - d / (reach * side)))


EDGE_MARGIN = 0.25
"""A predicted centre this many box sides beyond the frame's edge has left it (a face whose centre is on the
edge is half visible, and may still be detected)."""


def _inside(box: Box, frame_size: tuple[int, int]) -> bool:
    cx, cy = box.x + box.width / 2, box.y + box.height / 2
    mx, my = EDGE_MARGIN * box.width, EDGE_MARGIN * box.height
    return -mx <= cx < frame_size[0] + mx and -my <= cy < frame_size[1] + my


class Tracker:
    """Joins each frame's detections to tracks; see the module docstring."""

    def __init__(self, *, max_age_s: float = 1.0, min_score: float = 0.05, keep_best: int = 5) -> None:
        self.max_age_s = max_age_s
        self.min_score = min_score
        self.keep_best = keep_best
        self.tracks: list[Track] = []
        self._next_id = 1

    def update(
        self,
        t: float,
        detections: list[Detection],
        crops: list[npt.NDArray[np.uint8]],
        sharpness: list[float],
        frame_size: tuple[int, int] | None = None,
    ) -> tuple[list[Track], list[Track]]:
        """Add one frame at time ``t`` (s). Returns ``(active, ended)``: the tracks seen in this frame, and the
        tracks that ended (unseen for over ``max_age_s``, or, given the frame's ``(width, height)`` px, whose
        predicted centre has left the frame by ``EDGE_MARGIN`` box sides), removed from the tracker."""
        gone: list[Track] = []
        if frame_size is not None:
            gone = [tr for tr in self.tracks if tr.last_t < t and not _inside(tr.predicted(t), frame_size)]
            self.tracks = [tr for tr in self.tracks if tr not in gone]
        assigned: dict[int, int] = {}
        if self.tracks and detections:
            cost = np.ones((len(self.tracks), len(detections)))
            for i, track in enumerate(self.tracks):
                guess = track.predicted(t)
                reach = FIRST_STEP_SIDES if track.hits == 1 else PROXIMITY_SIDES
                for j, d in enumerate(detections):
                    cost[i, j] = 1.0 - match_score(guess, d.box, reach)
            rows, cols = linear_sum_assignment(cost)
            for i, j in zip(rows, cols, strict=True):
                if 1.0 - cost[i, j] >= self.min_score:
                    assigned[int(j)] = int(i)
        active: list[Track] = []
        for j, d in enumerate(detections):
            view = View(t, d, crops[j], view_score(d, sharpness[j]))
            if j in assigned:
                track = self.tracks[assigned[j]]
                dt = t - track.last_t
                if dt > 0:
                    old, new = track.box, d.box
                    vx = (new.x + new.width / 2 - old.x - old.width / 2) / dt
                    vy = (new.y + new.height / 2 - old.y - old.height / 2) / dt
                    if track.hits == 1:
                        track.velocity = (vx, vy)
                    else:
                        track.velocity = (0.5 * track.velocity[0] + 0.5 * vx, 0.5 * track.velocity[1] + 0.5 * vy)
                track.box, track.last_t = d.box, t
                track.hits += 1
            else:
                track = Track(id=self._next_id, box=d.box, first_t=t, last_t=t)
                self._next_id += 1
                self.tracks.append(track)
            self._keep(track, view)
            active.append(track)
        ended = gone + [tr for tr in self.tracks if t - tr.last_t > self.max_age_s]
        self.tracks = [tr for tr in self.tracks if t - tr.last_t <= self.max_age_s]
        return active, ended

    def finish(self) -> list[Track]:
        """End every track (the source ended)."""
        ended, self.tracks = self.tracks, []
        return ended

    def _keep(self, track: Track, view: View) -> None:
        track.views.append(view)
        if len(track.views) > self.keep_best:
            track.views.sort(key=lambda v: v.score, reverse=True)
            del track.views[self.keep_best :]
