"""``media_stores``: the events, video jobs, streams and photo stores of one backend, parametrised over the
embedded SQLite files and the real PostgreSQL of the test run (no fakes). ``media_stores("a")`` opens them as
replica ``a`` would: on PostgreSQL every name is another replica (own pool, own data dir, one shared database); on
SQLite every name reopens the same data dir (one process at a time)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from service.events.store import SQLiteEventStore
from service.gallery.postgres.connection import PoolOptions
from service.pgstores import open_postgres
from service.photos.sqlite import SQLitePhotoStore
from service.stores import MediaStores
from service.streams.store import SQLiteStreamStore
from service.video.jobstore import SQLiteJobStore

OpenStores = Callable[..., MediaStores]
BACKENDS = ["sqlite", "postgres"]


def sqlite_stores(data: Path) -> MediaStores:
    """The embedded stores of a data dir."""
    return MediaStores(SQLiteEventStore(data), SQLiteJobStore(data), SQLiteStreamStore(data), SQLitePhotoStore(data))


@pytest.fixture(params=BACKENDS)
def media_stores(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[OpenStores]:
    with ExitStack() as stack:
        url = request.getfixturevalue("pg_url") if request.param == "postgres" else None

        def make(name: str = "a") -> MediaStores:
            if url is None:
                stores = sqlite_stores(tmp_path / "data")
            else:
                backend = open_postgres(url, pool=PoolOptions(min_size=1, max_size=4))
                stack.callback(backend.close)
                stores = backend.media_stores(tmp_path / name)
            for store in (stores.events, stores.jobs, stores.streams, stores.photos):
                stack.callback(store.close)
            return stores

        yield make


def add_cannot_link(store: object, a: int, b: int) -> None:
    """A "not this person" constraint between faces ``a`` and ``b``, written as ``split_face`` leaves one (test
    data: the stores have no method that adds one alone)."""
    from typing import cast

    from service.photos.sqlstore import SqlPhotoStore

    with cast(SqlPhotoStore, store).transaction() as c:
        c.execute("INSERT INTO cannot_link VALUES (?, ?)", (min(a, b), max(a, b)))


def add_merge_group(store: object, ids: list[int], group: int) -> None:
    """Faces ``ids`` in one merge group labelled ``group``, as ``merge_clusters`` leaves them (test data)."""
    from typing import cast

    from service.photos.sqlstore import SqlPhotoStore

    with cast(SqlPhotoStore, store).transaction() as c:
        c.executemany("INSERT INTO merged_faces VALUES (?, ?)", [(i, group) for i in ids])
