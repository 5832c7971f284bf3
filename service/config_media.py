"""The media's settings (videos, live streams, events and their webhooks, the photo library), read from the
environment with the prefix ``FACEREC_`` as part of :class:`service.config.Settings`."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings

from service.events.store import CLAIM_S
from service.streams.backoff import DEFAULT_MAX_S, FIRST_S

MIN_FPS = 0.01
"""The lowest analysis rate a video job or stream accepts, frames per second (one frame every 100 s)."""


class MediaSettings(BaseSettings):
    """Videos, live streams, events, webhooks and the photo library; :class:`service.config.Settings` adds the
    rest and the prefix, and checks a webhook URL has its secret."""

    video_max_upload_bytes: int = Field(
        default=1024 * 1024 * 1024,
        ge=1,
        description="Largest video upload (POST /v1/videos), bytes; apart from FACEREC_MAX_UPLOAD_BYTES (413 above).",
    )
    video_keep_uploads: bool = Field(
        default=False, description="Keep uploaded videos in <data>/uploads after processing (default: delete them)."
    )
    video_fps: float = Field(
        default=5.0,
        ge=MIN_FPS,
        le=60.0,
        description="Video files: frames per second of video time analysed by default.",
    )
    video_workers: int = Field(
        default=1,
        ge=1,
        description=(
            "Frames that streams and video jobs may analyse at once, in total: their bounded share of the CPU "
            "(streams drop frames beyond it; REST requests are not queued behind them)."
        ),
    )
    video_min_face_px: int = Field(
        default=40,
        ge=1,
        description=(
            "Videos, streams and the live page: faces smaller than this (shorter box side, source pixels) are not "
            "looked for; larger values make detection on camera frames cheaper."
        ),
    )
    streams_max: int = Field(default=8, ge=0, description="Most live streams (POST /v1/streams) at once.")
    stream_max_backoff_s: float = Field(
        default=DEFAULT_MAX_S,
        ge=FIRST_S,
        le=86400.0,
        description=(
            "Live streams: longest wait between attempts to reach a source that fails (0.25 s doubling up to this, "
            "+-20 % jitter), seconds."
        ),
    )
    track_decide_frames: int = Field(
        default=5,
        ge=1,
        description="Live streams: a track is decided once seen in this many processed frames (or when it ends).",
    )
    track_max_age_s: float = Field(
        default=1.0, gt=0.0, description="A track not seen for this many seconds of source time has ended."
    )
    events_retention_days: float = Field(
        default=90.0, ge=0.0, description="Events older than this are erased (0 = kept forever)."
    )
    webhook_url: str = Field(
        default="", description="POST every event here (signed, retried, at least once); empty = no webhooks."
    )
    webhook_secret: str = Field(
        default="", description="HMAC-SHA256 key that signs webhook deliveries; required with FACEREC_WEBHOOK_URL."
    )
    webhook_timeout_s: float = Field(
        default=10.0,
        gt=0.0,
        le=CLAIM_S / 2,
        description="Deadline of one webhook delivery attempt (connect, send, the answer's status and headers), s; "
        "at most half of the claim a replica holds on a delivery it sends.",
    )
    webhook_max_backoff_s: float = Field(
        default=300.0, gt=0.0, description="Longest wait between webhook delivery attempts, seconds."
    )

    photo_library: bool = Field(
        default=False,
        description=(
            "Photo library (/v1/photos, /v1/search, /v1/clusters): keeps the faces of everyone in indexed photos, "
            "also of people who never enrolled. Off by default: those endpoints answer 403 photo_library_disabled."
        ),
    )
    photo_unnamed_retention_days: float = Field(
        default=0.0,
        ge=0.0,
        description="Photo library: unnamed faces older than this many days are erased (0 = kept until deleted).",
    )
    photo_cluster_threshold: float | None = Field(
        default=None,
        gt=0.0,
        le=2.0,
        description=(
            "Photo library: the largest L2 distance that links two unnamed faces when clustering; default: the "
            "match threshold in force."
        ),
    )
    photo_cluster_max_fir: float = Field(
        default=0.1,
        ge=0.0,
        lt=1.0,
        description=(
            "Photo library: the linking distance tightens as the library grows, so that a face has another "
            "person's face within it with at most this probability (the identify calibration; chosen on LFW, "
            "docs/PHOTOS.md). 0 = always FACEREC_PHOTO_CLUSTER_THRESHOLD."
        ),
    )
    photo_recluster_interval_s: float = Field(
        default=3600.0,
        ge=0.0,
        description=(
            "Photo library: how often the background task re-clusters the unnamed faces (when any changed) and "
            "enforces the retention, seconds; 0 = never in the background (on demand only)."
        ),
    )
