"""Turn track decisions into stored events, queue their webhooks and count them."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

from service.events.store import Event, EventStore
from service.video.pipeline import TrackDecision

VIDEO_NAMESPACE = uuid.UUID("6f1d8a53-3c1e-4d7e-9a53-0c1f2b7c9e11")


def event_of(decision: TrackDecision, *, source: str, event_id: str, at: float | None = None) -> Event:
    """The event of one track decision, stamped ``at`` (Unix s, default now)."""
    v = decision.vote
    return Event(
        id=event_id,
        time=time.time() if at is None else at,
        source=source,
        track_id=decision.track_id,
        subject_id=v.subject_id,
        name=v.name,
        distance=v.distance,
        estimated_fir=v.estimated_fir,
        first_s=decision.first_s,
        last_s=decision.last_s,
        frames=decision.frames,
    )


def video_event_id(job_id: str, track_id: int) -> str:
    """A stable id for a video job's track, so re-processing the job after a restart adds no duplicate."""
    return uuid.uuid5(VIDEO_NAMESPACE, f"{job_id}/{track_id}").hex


def stream_event_id() -> str:
    return uuid.uuid4().hex


class EventRecorder:
    """Stores events (with a webhook outbox row when webhooks are on) and tells the sender and the metrics."""

    def __init__(
        self,
        store: EventStore,
        *,
        webhooks: bool,
        wake: Callable[[], None] | None = None,
        on_event: Callable[[Event], None] | None = None,
    ) -> None:
        self.store, self.webhooks, self.wake, self.on_event = store, webhooks, wake, on_event

    def record(self, events: list[Event]) -> list[Event]:
        """Store ``events``; returns the new ones (already stored ids are skipped)."""
        if not events:
            return []
        new = self.store.add(events, outbox=self.webhooks)
        if new and self.wake is not None:
            self.wake()
        if self.on_event is not None:
            for e in new:
                self.on_event(e)
        return new
