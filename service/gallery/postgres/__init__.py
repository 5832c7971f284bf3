"""The PostgreSQL + pgvector backend: PostgreSQL holds the whole gallery (subjects, faces with ``vector(128)``
embeddings, crops, re-index staging), the API keys, the audit log and the shared rate-limit buckets; pgvector's
HNSW indexes (one per model id) answer searches. Replicas keep no state, so any number can serve one database.
Selected by ``FACEREC_DATABASE_URL``."""

from service.gallery.postgres.accounts import PostgresAuditLog, PostgresKeyStore, PostgresRateLimiter
from service.gallery.postgres.backend import PostgresBackend, open_postgres, prepare_database
from service.gallery.postgres.connection import PoolOptions, location
from service.gallery.postgres.errors import DatabaseConfigError, SchemaTooNew
from service.gallery.postgres.gallery import PostgresGallery
from service.gallery.postgres.schema import SCHEMA_VERSION
from service.gallery.postgres.vectors import VectorOptions

__all__ = [
    "SCHEMA_VERSION",
    "DatabaseConfigError",
    "PoolOptions",
    "PostgresAuditLog",
    "PostgresBackend",
    "PostgresGallery",
    "PostgresKeyStore",
    "PostgresRateLimiter",
    "SchemaTooNew",
    "VectorOptions",
    "location",
    "open_postgres",
    "prepare_database",
]
