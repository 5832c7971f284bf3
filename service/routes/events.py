"""Events: one per person tracked in a video or a stream (admin scope: they say who was where, when)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from service.auth import AdmitFirst
from service.deps import AdminKey
from service.errors import BadRequest
from service.events.store import MOMENT, EventFilter, unix_seconds
from service.media import MediaDep
from service.routes.cursors import int_cursor
from service.routes.docs import errors

router = APIRouter(prefix="/v1/events", tags=["events"], route_class=AdmitFirst)


class EventOut(BaseModel):
    """``subject_id``/``name`` null = an unknown person; ``distance`` L2 in [0, 2]; ``first_s``/``last_s`` in
    seconds of the source (video time, or the stream's clock); ``time`` when the decision was made (UTC)."""

    id: str = Field(description="Unique; webhooks carry it for de-duplication.")
    time: str
    source: str = Field(description="stream:<id> or video:<id>")
    track_id: int
    subject_id: str | None
    name: str | None
    distance: float | None
    estimated_false_identification_rate: float | None
    first_s: float
    last_s: float
    frames: int


class EventPage(BaseModel):
    items: list[EventOut]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null at the end.")


@router.get(
    "", response_model=EventPage, summary="Track decisions, oldest first, paginated", responses=errors(401, 403, 422)
)
async def list_events(
    media: MediaDep,
    _: AdminKey,
    subject_id: str | None = None,
    source: str | None = None,
    since: Annotated[datetime | None, Query(description=f"{MOMENT}; inclusive.")] = None,
    until: Annotated[datetime | None, Query(description=f"{MOMENT}; exclusive.")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: str | None = None,
) -> EventPage:
    after = int_cursor(cursor)
    start, end = unix_seconds(since), unix_seconds(until)
    if start is not None and end is not None and end < start:  # swapped: an empty page would read as no one
        raise BadRequest("until: must not be before since")
    items, nxt = await run_in_threadpool(
        lambda: media.events.query(
            EventFilter(
                subject_id=subject_id,
                source=source,
                since=start,
                until=end,
                limit=limit,
                cursor=after,
            )
        )
    )
    return EventPage(
        items=[EventOut.model_validate(e.to_dict()) for e in items], next_cursor=None if nxt is None else str(nxt)
    )
