"""The backend contract: what every :class:`service.gallery.base.Gallery` backend must do, run against each.

A backend is ONE entry of :data:`BACKENDS`: a ``pytest.param(ContractBackend(...), id="name")``. A new backend is
done when the whole suite passes with its entry added, not a copy of the suite. Fixtures every test uses:

- ``contract_backend``: the :class:`ContractBackend` of the current parameter.
- ``storage``: a fresh, empty storage of that backend (a data dir, a database), removed after the test.
- ``gallery``: a :class:`Gallery` opened on ``storage``; closed at teardown unless the test closed it.
- ``reopen``: ``reopen() -> Gallery`` closes every gallery the test opened on ``storage`` and opens it again,
  as a restarted process would (close + open: acknowledged writes must all be there).
- ``stager``: the staging methods (``reindex_counts``, ``crops_to_embed``, ``stage_embeddings``) on the same
  storage *while* ``gallery`` stays open: what ``facerec reindex`` gets while a server serves.

Real parts only: the embedded backend runs real SQLite and real FAISS on ``tmp_path``; the PostgreSQL backend a
fresh database on the test run's real PostgreSQL 18 + pgvector (tests/pgfixtures.py).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import pytest

from service.bootstrap import ReindexStaging
from service.gallery import Gallery, SideStaging, open_gallery
from tests.pgfixtures import fresh_database


class Stager(ReindexStaging, Protocol):
    """Staging methods on an open storage, closed by the fixture."""

    def close(self) -> None: ...


@dataclass(frozen=True)
class ContractBackend:
    """How the contract suite gets one backend.

    ``storage(tmp_path)``: a context manager yielding a handle to fresh, empty storage (anything the backend
    needs to open it again: a data dir, a database URL) and removing it on exit. ``open(handle)``: a new
    gallery on it. ``open_stager(handle)``: staging on the same storage while a gallery is open (default: a
    second gallery from ``open``, which a backend whose replicas share storage allows).
    """

    storage: Callable[[Path], AbstractContextManager[Any]]
    open: Callable[[Any], Gallery]
    open_stager: Callable[[Any], Stager] | None = None


@contextlib.contextmanager
def _data_dir(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path / "data"  # tmp_path is removed by pytest


EMBEDDED = ContractBackend(
    storage=_data_dir,
    open=lambda data: open_gallery(data, auto_maintain=False),
    open_stager=SideStaging,  # the data dir is locked to the serving process: stage through a second connection
)


def _open_postgres(url: str) -> Gallery:
    from service.gallery.postgres import PoolOptions, open_database

    return open_database(url, pool=PoolOptions(min_size=1, max_size=4)).gallery  # closing it closes its pool


POSTGRES = ContractBackend(
    storage=lambda tmp_path: fresh_database(),  # a new database on the test run's real PostgreSQL + pgvector
    open=_open_postgres,  # a second one on the same database is another replica: it may stage while one serves
)


@dataclass(frozen=True)
class _MilvusStorage:
    database_url: str
    milvus_uri: str


def _milvus_storage(server: bool) -> Callable[[Path], AbstractContextManager[_MilvusStorage]]:
    @contextlib.contextmanager
    def storage(tmp_path: Path) -> Iterator[_MilvusStorage]:
        from tests.milvusfixtures import shared_server

        uri = shared_server().uri if server else str(tmp_path / "milvus.db")
        with fresh_database() as url:  # a fresh gallery uuid: its own collections on a shared server
            yield _MilvusStorage(url, uri)

    return storage


def _open_milvus(handle: _MilvusStorage) -> Gallery:
    from service.gallery.milvus import MilvusOptions, open_milvus

    return open_milvus(
        handle.database_url, MilvusOptions(uri=handle.milvus_uri, timeout_s=10), sync_interval_s=0
    ).gallery


def _milvus_stager(handle: _MilvusStorage) -> Stager:
    """Staging touches PostgreSQL only: a plain PostgreSQL gallery on the same database (milvus-lite allows one
    client per file)."""
    from service.gallery.postgres import open_database

    return open_database(handle.database_url).gallery


MILVUS_LITE = ContractBackend(storage=_milvus_storage(False), open=_open_milvus, open_stager=_milvus_stager)
MILVUS_SERVER = ContractBackend(storage=_milvus_storage(True), open=_open_milvus, open_stager=_milvus_stager)

BACKENDS: list[Any] = [
    pytest.param(EMBEDDED, id="embedded"),
    pytest.param(POSTGRES, id="postgres"),
    pytest.param(MILVUS_LITE, id="milvus-lite"),
    pytest.param(MILVUS_SERVER, id="milvus-server"),
]
"""Every backend the contract runs against; the embedded one first."""


@pytest.fixture(params=BACKENDS)
def contract_backend(request: pytest.FixtureRequest) -> ContractBackend:
    backend: ContractBackend = request.param
    return backend


@pytest.fixture
def storage(contract_backend: ContractBackend, tmp_path: Path) -> Iterator[Any]:
    with contract_backend.storage(tmp_path) as handle:
        yield handle


@dataclass
class _Opened:
    galleries: list[Gallery]


@pytest.fixture
def _opened(contract_backend: ContractBackend, storage: Any) -> Iterator[_Opened]:
    opened = _Opened([])
    yield opened
    for g in opened.galleries:  # those still open
        g.close()


@pytest.fixture
def gallery(contract_backend: ContractBackend, storage: Any, _opened: _Opened) -> Gallery:
    g = contract_backend.open(storage)
    _opened.galleries.append(g)
    return g


@pytest.fixture
def reopen(
    contract_backend: ContractBackend, storage: Any, _opened: _Opened, gallery: Gallery
) -> Callable[[], Gallery]:
    def again() -> Gallery:
        while _opened.galleries:
            _opened.galleries.pop().close()
        g = contract_backend.open(storage)
        _opened.galleries.append(g)
        return g

    return again


@pytest.fixture
def stager(contract_backend: ContractBackend, storage: Any, gallery: Gallery) -> Iterator[Stager]:
    opener = contract_backend.open_stager or contract_backend.open
    s = opener(storage)
    try:
        yield s
    finally:
        s.close()
