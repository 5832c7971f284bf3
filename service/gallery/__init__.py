"""The gallery: a durable vector database of faces behind the :class:`Gallery` protocol (``base.py``). Backends:
the embedded one here (``local/``: SQLite truth in ``sqlite/`` + FAISS index cache) and, selected by
``service.bootstrap``, a database one.

Conventions: embeddings are float32 (128,) unit vectors; distances are L2 in [0, 2]; similarity is
``1 - d**2 / 2``. Never imports the web layer.
"""

from service.gallery.base import Gallery
from service.gallery.errors import (
    FaceNotFound,
    GalleryError,
    GalleryLocked,
    InvalidCursor,
    InvalidEmbedding,
    ModelMismatch,
    ReindexIncomplete,
    ReindexRefused,
    SnapshotInvalid,
    StorageError,
    StorageFull,
    StorageUnavailable,
    SubjectNotFound,
)
from service.gallery.local import GallerySettings, LocalGallery, SideStaging, default_data_dir, open_gallery
from service.gallery.segment import IndexParams
from service.gallery.types import (
    Candidate,
    FaceRecord,
    GalleryStats,
    IndexInfo,
    NewFace,
    SnapshotInfo,
    Subject,
)

__all__ = [
    "Candidate",
    "FaceNotFound",
    "FaceRecord",
    "Gallery",
    "GalleryError",
    "GalleryLocked",
    "GallerySettings",
    "GalleryStats",
    "IndexInfo",
    "IndexParams",
    "InvalidCursor",
    "InvalidEmbedding",
    "LocalGallery",
    "ModelMismatch",
    "NewFace",
    "ReindexIncomplete",
    "ReindexRefused",
    "SideStaging",
    "SnapshotInfo",
    "SnapshotInvalid",
    "StorageError",
    "StorageFull",
    "StorageUnavailable",
    "Subject",
    "SubjectNotFound",
    "default_data_dir",
    "open_gallery",
]
