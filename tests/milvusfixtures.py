"""Fixtures for real Milvus: a standalone Milvus 2.3 server (:mod:`service.devmilvus`) started once per test run,
and a milvus-lite database file per test. Nothing is skipped: if Milvus cannot start, the tests that need it fail.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from service.devmilvus import MilvusServer, running_server

__all__ = ["MilvusServer", "milvus_lite_uri", "milvus_server"]


@pytest.fixture(scope="session")
def milvus_server() -> Iterator[MilvusServer]:
    """The test run's Milvus 2.3 standalone server."""
    with running_server() as server:
        yield server


@pytest.fixture
def milvus_lite_uri(tmp_path: Path) -> str:
    """A fresh milvus-lite database file."""
    return str(tmp_path / "milvus.db")
