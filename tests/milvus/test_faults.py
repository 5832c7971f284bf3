"""The real Milvus server killed (SIGKILL: a crash) and restarted on the same data dir while two replicas enrol,
erase and search (bench/milvus_faults.py's mixed load, shortened): no acknowledged write lost,
no erased face returned, no refused enrolment stored, reconcile finds 0 differences once the outbox is drained.
The longer runs, and the graceful stops, are the benchmark's (docs/MILVUS.md, Faults)."""

from __future__ import annotations

import signal

from bench.milvus_faults import fault_run
from service.gallery.milvus import MilvusGallery
from tests.milvus.conftest import OpenReplica
from tests.milvusfixtures import MilvusServer


def test_server_restart_under_mixed_load(open_server_replica: OpenReplica, milvus_server: MilvusServer) -> None:
    a = open_server_replica(sync_interval_s=0.5).gallery
    b = open_server_replica(sync_interval_s=0.5).gallery
    assert isinstance(a, MilvusGallery) and isinstance(b, MilvusGallery)
    out = fault_run(milvus_server, a, b, signal.SIGKILL, warmup_s=3.0, down_s=1.0, after_s=3.0)
    print(out)
    assert out.other_errors == []
    assert out.enrolled > 100 and out.erased > 0 and out.searches > 0
    assert out.recovery_s > 0, "the service did not resume after the restart"
    assert (out.lost_reads, out.lost_final, out.erased_returned, out.refused_stored) == (0, 0, 0, 0)
    assert out.reconcile_differences == 0


def test_a_server_killed_with_clients_connected_comes_back_on_its_port(milvus_server: MilvusServer) -> None:
    """The killed server's connections linger on its port (TIME_WAIT) and ``milvus-server`` then listened on the
    next free port: the restart never answered on the address the replicas use (``start`` timed out)."""
    from pymilvus import MilvusClient

    client = MilvusClient(uri=milvus_server.uri, timeout=10)
    try:
        client.list_collections()
        milvus_server.kill()
        milvus_server.start(timeout_s=150)
    finally:
        client.close()
    again = MilvusClient(uri=milvus_server.uri, timeout=10)
    try:
        assert isinstance(again.list_collections(), list)
    finally:
        again.close()
