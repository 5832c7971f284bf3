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

Real parts only: the embedded backend runs real SQLite and real FAISS on ``tmp_path``.
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

BACKENDS: list[Any] = [
    pytest.param(EMBEDDED, id="embedded"),
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
