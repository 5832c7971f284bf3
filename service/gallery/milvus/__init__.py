"""Milvus as the vector engine of the PostgreSQL gallery (``FACEREC_VECTOR_BACKEND=milvus``): PostgreSQL stays the
truth, Milvus is a rebuildable index of it, kept in step through an outbox (see :mod:`.outbox`)."""

from service.gallery.milvus.backend import open_milvus
from service.gallery.milvus.engine import MilvusEngine
from service.gallery.milvus.gallery import MilvusGallery
from service.gallery.milvus.options import MilvusOptions

__all__ = ["MilvusEngine", "MilvusGallery", "MilvusOptions", "open_milvus"]
