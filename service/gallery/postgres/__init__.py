"""The gallery in PostgreSQL + pgvector: subjects, faces with ``vector(128)`` embeddings, crops and re-index
staging in PostgreSQL, searched through pgvector's HNSW indexes (one per model id). Replicas keep no state, so any
number can serve one database. The API keys, audit log and rate limit on the same database are the service's
(:mod:`service.pgstores`); ``FACEREC_DATABASE_URL`` selects all of them."""

from service.gallery.postgres.connection import PoolOptions, location
from service.gallery.postgres.database import PostgresDatabase, open_database, prepare_database
from service.gallery.postgres.errors import DatabaseConfigError, SchemaTooNew
from service.gallery.postgres.gallery import PostgresGallery
from service.gallery.postgres.schema import SCHEMA_VERSION
from service.gallery.postgres.vectors import VectorOptions

__all__ = [
    "SCHEMA_VERSION",
    "DatabaseConfigError",
    "PoolOptions",
    "PostgresDatabase",
    "PostgresGallery",
    "SchemaTooNew",
    "VectorOptions",
    "location",
    "open_database",
    "prepare_database",
]
