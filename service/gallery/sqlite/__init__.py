"""The embedded gallery's SQLite layer: schema and migrations (``schema``), connections and the one
``transaction()`` (``connections``), storage-error classification (``errors``), queries per table (``subjects``,
``faces``, ``changes``, ``staging``) and the :class:`SQLiteStore` facade the gallery uses."""

from service.gallery.sqlite.connections import READER_CACHE_KIB, WRITER_CACHE_KIB
from service.gallery.sqlite.errors import storage_error, storage_errors
from service.gallery.sqlite.schema import DB_NAME, SCHEMA_VERSION
from service.gallery.sqlite.store import SQLiteStore, Watermarks

__all__ = [
    "DB_NAME",
    "READER_CACHE_KIB",
    "SCHEMA_VERSION",
    "WRITER_CACHE_KIB",
    "SQLiteStore",
    "Watermarks",
    "storage_error",
    "storage_errors",
]
