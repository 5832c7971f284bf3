"""PostgreSQL (the truth) going away while Milvus stays: calls answer StorageUnavailable (503) and service resumes
by itself; an enrolment whose faces committed just before PostgreSQL went away is not refused while stored."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import TypeVar

import numpy as np
import pytest

from service.devdb import DevCluster
from service.gallery import StorageUnavailable
from service.gallery.milvus import MilvusGallery, MilvusOptions, open_milvus
from service.gallery.milvus.outbox import DrainResult
from service.gallery.milvus.reconcile import reconcile
from service.gallery.postgres.connection import PoolOptions
from tests.milvus.helpers import MODEL, faces, unit
from tests.milvusfixtures import MilvusServer
from tests.pgfixtures import new_cluster

T = TypeVar("T")


@pytest.fixture
def own_cluster() -> Iterator[DevCluster]:
    """A PostgreSQL cluster of this test's own (it is stopped and restarted)."""
    cluster = new_cluster()
    yield cluster
    cluster.destroy()


@pytest.fixture
def gallery(own_cluster: DevCluster, milvus_server: MilvusServer) -> Iterator[MilvusGallery]:
    backend = open_milvus(
        own_cluster.url(),
        MilvusOptions(uri=milvus_server.uri, timeout_s=3.0),
        pool=PoolOptions(min_size=1, max_size=4, timeout_s=3.0),
        sync_interval_s=0.5,
    )
    assert isinstance(backend.gallery, MilvusGallery)
    yield backend.gallery
    backend.close()


def _until_up(fn: Callable[[], T], timeout_s: float = 30.0) -> T:
    """``fn()`` once the service answers again: PostgreSQL back, and Milvus's collection loaded (the sync thread
    may be creating it right then, after a drain the outage cut: a search meanwhile is a 503, retried)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return fn()
        except StorageUnavailable:  # VectorIndexUnavailable (Milvus) included
            assert time.monotonic() < deadline, "service did not resume after PostgreSQL came back"
            time.sleep(0.3)


def test_postgres_away_while_milvus_stays(
    own_cluster: DevCluster, gallery: MilvusGallery, rng: np.random.Generator
) -> None:
    vecs = unit(rng, 6)
    s = gallery.create_subject(name="a")
    acked = gallery.add_faces(s.id, faces(vecs[:3]))
    own_cluster.stop("immediate")
    try:
        with pytest.raises(StorageUnavailable):
            gallery.search(vecs[:1], model_id=MODEL)
        with pytest.raises(StorageUnavailable):
            gallery.add_faces(s.id, faces(vecs[3:4]))
        with pytest.raises(StorageUnavailable):
            gallery.delete_face(acked[0].id)
    finally:
        own_cluster.start()
    got = _until_up(lambda: gallery.search(vecs[:3], model_id=MODEL, top_k=1))
    assert [hits[0].face_id for hits in got] == [r.id for r in acked]
    [late] = gallery.add_faces(s.id, faces(vecs[4:5]))
    assert gallery.search(vecs[4:5], model_id=MODEL, top_k=1)[0][0].face_id == late.id
    assert len(gallery.list_faces(s.id)) == 4  # the refused enrolment stored nothing
    assert reconcile(gallery).differences == 0


def test_postgres_away_right_after_the_enrolment_commits(
    own_cluster: DevCluster, gallery: MilvusGallery, rng: np.random.Generator
) -> None:
    """The faces and their outbox rows committed, then PostgreSQL went away before the drain: the enrolment is
    either acknowledged (its faces are found, through the outbox until it drains) or leaves nothing stored."""
    vecs = unit(rng, 2)
    s = gallery.create_subject(name="a")
    real_drain = gallery.drain

    def away_then_drain() -> DrainResult:
        own_cluster.stop("immediate")
        return real_drain()

    gallery.drain = away_then_drain  # type: ignore[method-assign]
    try:
        acked = gallery.add_faces(s.id, faces(vecs))
        refused = False
    except StorageUnavailable:
        refused = True
    finally:
        gallery.drain = real_drain  # type: ignore[method-assign]
        own_cluster.start()
    stored = _until_up(lambda: gallery.list_faces(s.id))
    if refused:
        assert stored == [], f"the enrolment answered 503 but stored {len(stored)} face(s)"
    else:
        assert [f.id for f in stored] == [r.id for r in acked]
        got = _until_up(lambda: gallery.search(vecs, model_id=MODEL, top_k=1))
        assert [hits[0].face_id for hits in got] == [r.id for r in acked]
        deadline = time.monotonic() + 30
        while gallery.pending():
            assert time.monotonic() < deadline, "the sync thread did not drain the acknowledged faces"
            time.sleep(0.3)
        assert reconcile(gallery).differences == 0
