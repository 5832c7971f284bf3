"""Service settings, read from the environment with the prefix ``FACEREC_`` (e.g. ``FACEREC_DATA``)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from embeddings import AnalyzerConfig, QualityThresholds, default_threshold
from embeddings.encoders import DEFAULT_PRECISION, Precision
from embeddings.models import model_threshold
from embeddings.quality import DEFAULT_MAX_YAW
from embeddings.weights import MODEL_ID
from service.addresses import redact_url
from service.config_media import MIN_FPS, MediaSettings

__all__ = ["DATA_DIR_MODE", "MIN_FPS", "Settings"]

VectorBackend = Literal["faiss", "pgvector", "milvus"]
DATABASE_SCHEMES = ("postgresql", "postgres")
DB_POOL_MIN = 5
"""The smallest ``FACEREC_DB_POOL_SIZE``: an enrolment (the subject's lock), a photo naming (the naming lock), the
photo library's maintenance (its turn) and the Milvus reconciliation (its turn) may each hold a connection for a
lock while their statements take others; with fewer connections than these four plus one, they wait for each
other until ``FACEREC_DB_TIMEOUT_S`` and answer 503 (with one connection, every enrolment did)."""
DATA_DIR_MODE = 0o700
"""Mode of a data dir facerec creates: it holds face embeddings, crops and uploads, camera credentials and key
hashes, for the user that runs facerec only (an existing folder keeps its own)."""


class Settings(MediaSettings):
    """Everything the service can be told (the media's settings in :class:`MediaSettings`). Thresholds are L2
    distances between unit embeddings, in [0, 2]."""

    model_config = SettingsConfigDict(
        env_prefix="FACEREC_", extra="ignore", hide_input_in_errors=True, allow_inf_nan=False, env_ignore_empty=True
    )
    """Inputs stay out of validation errors: FACEREC_DATABASE_URL holds a password. Numbers are finite: ``inf``
    is no setting's "never" or "no limit" (0 is, where one exists), and waits of ``inf`` seconds crash threads.
    A variable set to nothing (``FACEREC_DATA=``) is unset: its default, not the current directory (``Path("")``)
    or every interface (``FACEREC_HOST=``)."""

    data: Path = Field(default=Path("./data"), description="Data dir: the gallery and keys.db live here.")
    database_url: str | None = Field(
        default=None,
        repr=False,
        description=(
            "PostgreSQL URL (postgresql://user:password@host:5432/db): the shared gallery, keys and audit log for "
            "any number of replicas. Unset: the embedded gallery in FACEREC_DATA. A secret: never logged in full."
        ),
    )
    vector_backend: VectorBackend | None = Field(
        default=None,
        description=(
            "Vector search engine: faiss (embedded, needs no database URL), pgvector or milvus (need "
            "FACEREC_DATABASE_URL). Default: faiss without a database URL, pgvector with one."
        ),
    )
    db_pool_size: int = Field(
        default=10,
        ge=DB_POOL_MIN,
        le=1000,
        description=f"PostgreSQL backend: most database connections of one replica (at least {DB_POOL_MIN}).",
    )
    db_timeout_s: float = Field(
        default=5.0,
        gt=0.0,
        description=(
            "PostgreSQL backend: how long a request waits for a database connection, seconds; then it answers 503 "
            "storage_unavailable (the database is down or every connection is busy)."
        ),
    )
    pgvector_ef_search: int = Field(
        default=100,
        ge=1,
        le=1000,
        description="pgvector HNSW search breadth (hnsw.ef_search); measured in docs/POSTGRES.md.",
    )
    pgvector_hnsw_m: int = Field(
        default=16,
        ge=2,
        le=100,
        description=(
            "pgvector HNSW graph degree (m) of indexes built from now on; 32 (with ef_construction 80) gives far "
            "better recall at 1M faces and slower searches (docs/POSTGRES.md)."
        ),
    )
    pgvector_ef_construction: int = Field(
        default=64,
        ge=4,
        le=1000,
        description="pgvector HNSW candidate list while building (ef_construction), at least 2 x m.",
    )
    host: str = Field(
        default="127.0.0.1",
        description="Address to listen on; a non-loopback address needs an API key to exist.",
    )
    port: int = Field(default=8000, ge=1, le=65535)
    max_upload_bytes: int = Field(
        default=10 * 1024 * 1024, ge=1, description="Largest request body, bytes (413 above)."
    )
    max_pixels: int = Field(default=40_000_000, ge=1, description="Largest decoded image, width x height (413 above).")
    body_idle_timeout_s: float = Field(
        default=60.0,
        gt=0,
        le=3600,
        description="Longest wait for the next part of a request body (an upload), seconds (408 after).",
    )
    model: str = Field(
        default=MODEL_ID,
        description=(
            "Embedding model id: the pretrained one or a fine-tuned model directory under "
            "<FACEREC_CACHE>/models/ (`facerec models list`)."
        ),
    )
    store_crops: bool = Field(
        default=True,
        description="Store each enrolled face's aligned 160x160 crop (needed by `facerec reindex`).",
    )
    milvus_uri: str | None = Field(
        default=None,
        description=(
            "Milvus endpoint for FACEREC_VECTOR_BACKEND=milvus: http://host:19530 (a server) or a local file "
            "path ending in .db (milvus-lite, one process). PostgreSQL stays the truth; Milvus is its index."
        ),
    )
    milvus_token: str | None = Field(
        default=None, repr=False, description="Milvus token (user:password or an API key); a secret, never logged."
    )
    milvus_index: str = Field(
        default="HNSW",
        description="Milvus index type of new collections: HNSW, HNSW_SQ, IVF_SQ8, DISKANN, FLAT (docs/MILVUS.md).",
    )
    milvus_ef: int = Field(
        default=128,
        ge=1,
        le=4096,
        description="Milvus HNSW search breadth (ef; IVF indexes probe ef / 8 lists); measured in docs/MILVUS.md.",
    )
    milvus_timeout_s: float = Field(
        default=5.0, gt=0.0, description="Longest a Milvus call may take before the request answers 503, seconds."
    )
    milvus_reconcile_interval_s: float = Field(
        default=600.0,
        ge=0.0,
        description="How often a replica compares Milvus with PostgreSQL and repairs differences, seconds; 0 = off.",
    )
    milvus_compact_delay_s: float = Field(
        default=3600.0,
        ge=0.0,
        description=(
            "Seconds from a subject's or face's erasure to the Milvus compaction that removes its vectors from "
            "Milvus's segments (erasures in that window share one compaction; docs/MILVUS.md)."
        ),
    )
    threshold: float | None = Field(
        default=None, ge=0.0, le=2.0, description="L2 match threshold; default: the model's card."
    )
    max_fir: float | None = Field(
        default=0.01,
        ge=0.0,
        lt=1.0,
        description=(
            "Largest acceptable false-identification rate for identify: the chance that a stranger is matched "
            "to someone. Without an explicit threshold, identify tightens the threshold as the gallery grows "
            "to keep this estimate; None/0 disables adaptation (the fixed threshold is used)."
        ),
    )
    top_k: int = Field(default=5, ge=1, le=100, description="Default number of candidates per face in identify.")
    min_face_size: float = Field(default=40.0, ge=0.0, description="Enrolment: shorter box side, source pixels.")
    min_confidence: float = Field(default=0.95, ge=0.0, le=1.0, description="Enrolment: detector confidence.")
    min_sharpness: float = Field(
        default=20.0, ge=0.0, description="Enrolment: Laplacian variance of the crop (0 = off)."
    )
    max_enrol_yaw_deg: float | None = Field(
        default=DEFAULT_MAX_YAW,
        ge=0.0,
        le=180.0,
        description=(
            "Enrolment: largest head turn |yaw|, degrees, estimated from the landmarks; a face turned further is "
            "rejected with reason `pose`. 0 or unset = no limit."
        ),
    )
    max_pending: int = Field(default=64, ge=1, description="Requests allowed to wait for the model; more get 429.")
    decode_budget_mp: float = Field(
        default=80.0,
        ge=0.0,
        description=(
            "Decoded megapixels (width x height / 1e6) that requests may hold at once; a request whose photo does "
            "not fit waits its turn (a larger photo runs alone). Bounds the memory of concurrent large uploads "
            "(~3 bytes a pixel, ~7.5 while decoding); 0 = no limit."
        ),
    )
    inference_threads: int = Field(
        default=2,
        ge=1,
        description=(
            "Requests running decode/detect/align/encode at once. With the micro-batcher on, this many plus "
            "FACEREC_BATCH_MAX_SIZE may be in the pipeline (those waiting for the encoder use no CPU)."
        ),
    )
    batch_max_size: int = Field(
        default=32,
        ge=0,
        description=(
            "Micro-batcher: most faces from concurrent requests encoded in one FaceNet call; 0 = off "
            "(each request calls the encoder itself)."
        ),
    )
    batch_max_wait_ms: float = Field(
        default=50.0,
        ge=0.0,
        description=(
            "Micro-batcher: longest a queued face waits for others before its batch runs, milliseconds (a "
            "lone request does not wait: the batch runs once no other request is still before its encode step)."
        ),
    )
    batch_max_queue: int = Field(
        default=128, ge=1, description="Micro-batcher: faces allowed to wait for the encoder; more get 429."
    )
    encoder: Precision = Field(
        default=DEFAULT_PRECISION,
        description=(
            "Encoder precision: fp32 (TensorFlow, the reference), bf16 or int8 (OpenVINO; converted from the "
            "weights on first use and cached). Trade-off and figures: docs/BENCHMARKS.md, 'Encoder precision'."
        ),
    )
    malloc_arenas: int = Field(default=2, ge=0, description="glibc malloc arenas; 0 = glibc's default (8 per core).")
    malloc_trim_s: float = Field(default=30.0, ge=0.0, description="Seconds between malloc_trim calls; 0 = off.")
    malloc_mmap_threshold_kib: int = Field(default=0, ge=0, description="Fixed mmap threshold, KiB; 0 = glibc's.")
    hnsw_storage: Literal["fp16", "sq8", "float32"] = Field(
        default="fp16",
        description="Embedded gallery: vectors in its HNSW index as fp16, sq8 (4x smaller) or float32 "
        "(docs/GALLERY.md); an index saved with another storage is converted at open.",
    )
    hnsw_sq8_from: int = Field(
        default=500_000,
        ge=0,
        description="Embedded gallery: from this many faces of a model on, its HNSW stores sq8 (half of fp16's "
        "memory, the same identities on the measured 1M gallery, ~1.5 ms more a search; docs/GALLERY.md); 0 = never.",
    )
    hnsw_ef_search: int = Field(default=128, ge=1, description="Embedded gallery: HNSW search breadth.")
    snapshot_interval_s: float = Field(
        default=300.0, gt=0.0, description="Embedded gallery: seconds between snapshots."
    )
    snapshot_every_changes: int = Field(
        default=10_000, ge=1, description="Embedded gallery: changes between snapshots."
    )
    ready_timeout_s: float = Field(default=60.0, ge=0.0, description="How long a request waits for the model to load.")
    rate_limit_per_minute: float = Field(
        default=600.0, ge=0.0, description="Sustained requests per minute per API key (or client IP); 0 = off."
    )
    rate_limit_burst: int = Field(
        default=60, ge=1, description="Requests a key may make at once before the per-minute rate applies."
    )
    cors_origins: str = Field(
        default="",
        description="Comma-separated origins allowed by CORS (e.g. https://app.example); empty = no CORS at all.",
    )
    shutdown_timeout_s: float = Field(
        default=20.0, gt=0.0, le=3600.0, description="On SIGTERM, how long requests in flight may take to finish (s)."
    )

    @field_validator("database_url", mode="before")
    @classmethod
    def _blank_url_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("data")
    @classmethod
    def _home(cls, value: Path) -> Path:
        """``~`` is the user's home, as in a shell: an .env file or a service unit does not expand it (a literal
        ``~`` folder in the current directory would become the data dir)."""
        try:
            return value.expanduser()
        except RuntimeError as exc:  # no home directory to be found
            raise ValueError(f"{value} starts with ~ but {exc}") from None

    @field_validator("cors_origins")
    @classmethod
    def _origins_only(cls, value: str) -> str:
        """Each entry ``*`` or ``scheme://host[:port]``: a browser's ``Origin`` has no path, so an entry with one
        (a trailing slash) would match nothing and refuse that site's every request."""
        for origin in (o.strip() for o in value.split(",")):
            parts = urlsplit(origin)
            extra = parts.path or parts.query or parts.fragment
            bare = parts.scheme in ("http", "https") and parts.netloc and not extra
            if origin and origin != "*" and not bare:
                raise ValueError(f"{origin!r} is not an origin: scheme://host[:port], no path (https://app.example)")
        return value

    @model_validator(mode="after")
    def _check_backend(self) -> Settings:
        url = self.database_url
        if url is not None and urlsplit(url).scheme not in DATABASE_SCHEMES:
            raise ValueError(f"FACEREC_DATABASE_URL must be a postgresql:// URL, got {redact_url(url)!r}")
        if url is not None and self.vector_backend == "faiss":
            raise ValueError(
                "FACEREC_VECTOR_BACKEND=faiss is the embedded gallery and takes no FACEREC_DATABASE_URL: unset one "
                "(or use pgvector / milvus with the database)"
            )
        if self.pgvector_ef_construction < 2 * self.pgvector_hnsw_m:
            raise ValueError(
                f"FACEREC_PGVECTOR_EF_CONSTRUCTION ({self.pgvector_ef_construction}) must be at least twice "
                f"FACEREC_PGVECTOR_HNSW_M ({self.pgvector_hnsw_m}), as pgvector requires"
            )
        if url is None and self.vector_backend in ("pgvector", "milvus"):
            raise ValueError(
                f"FACEREC_VECTOR_BACKEND={self.vector_backend} needs FACEREC_DATABASE_URL (postgresql://...); "
                "without a database the gallery is embedded (faiss)"
            )
        if self.webhook_url and not self.webhook_secret:
            raise ValueError(
                "FACEREC_WEBHOOK_URL is set but FACEREC_WEBHOOK_SECRET is empty: every delivery is signed with it"
            )
        return self

    @property
    def vector_engine(self) -> VectorBackend:
        """The vector engine in force: ``FACEREC_VECTOR_BACKEND``, or faiss / pgvector without / with a database."""
        if self.vector_backend is not None:
            return self.vector_backend
        return "pgvector" if self.database_url else "faiss"

    @property
    def database_display(self) -> str | None:
        """``FACEREC_DATABASE_URL`` with its password masked, for logs and error messages."""
        return redact_url(self.database_url) if self.database_url else None

    @property
    def cors_origin_list(self) -> list[str]:
        """``cors_origins`` split on commas, blanks dropped."""
        return [o.strip() for o in self.cors_origins.split(",") if o.strip()]

    @property
    def match_threshold(self) -> float:
        """The L2 threshold in force: ``FACEREC_THRESHOLD`` or the card threshold of ``FACEREC_MODEL``."""
        if self.threshold is not None:
            return self.threshold
        return default_threshold() if self.model == MODEL_ID else model_threshold(self.model)

    @property
    def photo_link_cap(self) -> float:
        """The photo library's largest linking distance: ``FACEREC_PHOTO_CLUSTER_THRESHOLD`` or the match threshold."""
        return self.match_threshold if self.photo_cluster_threshold is None else self.photo_cluster_threshold

    def analyzer_config(self) -> AnalyzerConfig:
        """The pipeline settings these service settings imply."""
        return AnalyzerConfig(
            quality=QualityThresholds(
                min_face_size=self.min_face_size,
                min_confidence=self.min_confidence,
                min_sharpness=self.min_sharpness,
                max_yaw=self.max_enrol_yaw_deg or None,
            ),
            max_pixels=self.max_pixels,
            encoder=self.encoder,
        )
