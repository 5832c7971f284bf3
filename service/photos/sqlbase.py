"""What every SQL photo store class builds on: a write transaction and a reader (given by the embedded SQLite and
the PostgreSQL store), and the two counters (``counters``: ``changes``, bumped by every write that changes the
library; ``cluster``, the last cluster id handed out)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import Any

from service.sqlconn import SqlConn


class SqlStoreBase(ABC):
    """The transaction, the reader and the counters of a SQL :class:`~service.photos.base.PhotoStore`."""

    @abstractmethod
    def transaction(self) -> AbstractContextManager[SqlConn]:
        """One write transaction, writers serialised (a photo's ids then grow in commit order); any exception rolls
        back; storage failures raise the gallery's ``StorageFull`` / ``StorageUnavailable``."""

    @abstractmethod
    def reader(self) -> AbstractContextManager[SqlConn]:
        """A connection for reads."""

    def _read(self, sql: str, args: Sequence[Any] = ()) -> list[Any]:
        with self.reader() as c:
            return list(c.execute(sql, args).fetchall())

    @staticmethod
    def _bump(c: SqlConn) -> None:
        c.execute("UPDATE counters SET value = value + 1 WHERE name = 'changes'")

    @staticmethod
    def _next_clusters(c: SqlConn, n: int) -> list[int]:
        """``n`` fresh cluster ids (also used as merge-group labels: one sequence, never reused)."""
        row = c.execute("UPDATE counters SET value = value + ? WHERE name = 'cluster' RETURNING value", (n,)).fetchone()
        end = int(row[0])
        return list(range(end - n + 1, end + 1))
