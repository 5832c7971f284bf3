"""The one SQL surface the stores shared by SQLite and PostgreSQL are written against: ``execute`` /
``executemany`` with ``?`` parameter markers, returning a cursor (``fetchone``, ``fetchall``, ``rowcount``, iteration).
A :class:`sqlite3.Connection` is one already; :class:`PgConn` adapts a psycopg connection. Keep SQL in the common
subset (``ON CONFLICT ... DO NOTHING``, ``RETURNING``, ``IS DISTINCT FROM``; no ``%`` literals)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Protocol


class Cursor(Protocol):
    rowcount: int

    def fetchone(self) -> Any: ...
    def fetchall(self) -> list[Any]: ...
    def __iter__(self) -> Iterator[Any]: ...


class SqlConn(Protocol):
    def execute(self, sql: str, args: Sequence[Any] = ..., /) -> Any: ...
    def executemany(self, sql: str, args: Iterable[Sequence[Any]], /) -> Any: ...


class PgConn:
    """A psycopg connection seen as a :class:`SqlConn` (``?`` becomes ``%s``)."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn

    def execute(self, sql: str, args: Sequence[Any] = ()) -> Any:
        return self.conn.execute(sql.replace("?", "%s"), tuple(args))

    def executemany(self, sql: str, args: Iterable[Sequence[Any]]) -> Any:
        cur = self.conn.cursor()
        cur.executemany(sql.replace("?", "%s"), [tuple(a) for a in args])
        return cur
