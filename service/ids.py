"""Integer ids of stored rows (faces, clusters, photo faces): 1 to 2**63 - 1, what SQLite's INTEGER and
PostgreSQL's bigint hold. A request with an id outside that range is a 422, never a database error."""

from __future__ import annotations

ROW_ID_MAX = 2**63 - 1
"""The largest row id either database can hold."""
