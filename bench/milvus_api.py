"""pymilvus's public API against the raw gRPC paths (the engine's write path; its search path before d54f6f0), on a
local Milvus 2.3.5 standalone server (service/devmilvus.py, started by the script) holding N synthetic faces in one
HNSW collection.

    python bench/milvus_api.py --size 100000 --probes 400 --writes 200 --out reports/milvus-api.json

``search``: per probe, both paths in turn (so the machine's noise falls on both alike), 40 neighbours (the gallery's
candidate count) at the newest write's guarantee timestamp (consistency ``Customized``, as the gallery searches):
one ``Search`` RPC built with pymilvus's request builder and read from the protobuf reply (the engine's search
path before commit d54f6f0; kept here, :func:`raw_search`, to measure it again after a pymilvus upgrade), and
the public ``MilvusClient.search`` (the engine's path, ``MilvusEngine.search``) with the same parameters, its hits
read into the same ``(id, distance)`` lists.

``writes``: one-face upserts, one-face deletes and 5,000-face upserts, each path in turn: the engine's request
built from numpy and sent through pymilvus's handler (``MilvusEngine.upsert`` / ``delete``: returns the mutation's
timestamp), the public ORM ``Collection.upsert`` / ``delete`` (deprecated in pymilvus 3; returns a
``MutationResult`` with ``.timestamp``; one ``describe_collection`` when the ``Collection`` is made, none per
write), and ``MilvusClient.upsert`` (public, no timestamp: for reference).
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.gallery import Synthetic
from bench.milvus_gallery import _wait_indexed, _write
from service.devmilvus import running_server
from service.gallery.milvus import MilvusEngine, MilvusOptions
from service.gallery.milvus.indexes import search_params

MODEL = "bench-model"
K = 40
"""Neighbours per search: what the gallery fetches for ``top_k=5`` (as bench/milvus_gallery.py's engine runs)."""


def raw_search(client: Any, name: str, probe: npt.NDArray[np.float32], params: dict[str, Any], ts: int) -> Any:
    """One ``Search`` RPC of ``probe`` for ``K`` neighbours at guarantee timestamp ``ts``, straight on the client's
    gRPC stub (pymilvus internals: bench only), hits read from the reply's flat id and score lists."""
    from pymilvus.client.prepare import Prepare
    from pymilvus.client.utils import check_status

    request = Prepare.search_requests_with_expr(
        collection_name=name,
        anns_field="embedding",
        param=params,
        limit=K,
        data=[probe.tolist()],
        use_default_consistency=False,
        consistency_level=4,  # Customized
        guarantee_timestamp=ts,
    )
    metadata = client._generate_call_context().to_grpc_metadata()
    reply = client._get_connection()._stub.Search(request, timeout=120, metadata=metadata)
    check_status(reply.status)
    res = reply.results
    ids, scores, out, pos = res.ids.int_id.data, res.scores, [], 0
    for n in res.topks:
        out.append([(int(i), float(s)) for i, s in zip(ids[pos : pos + n], scores[pos : pos + n], strict=True)])
        pos += n
    return out


def _stats(times: list[float]) -> dict[str, float]:
    ms = np.array(times) * 1e3
    return {
        "p50_ms": round(float(np.percentile(ms, 50)), 3),
        "p99_ms": round(float(np.percentile(ms, 99)), 3),
        "mean_ms": round(float(ms.mean()), 3),
    }


def _race(paths: dict[str, Callable[[int], Any]], reps: int, warmup: int = 10) -> dict[str, dict[str, float]]:
    """Each path ``warmup`` untimed then ``reps`` timed times, in turn (path A of rep i, path B of rep i, ...); stats
    per path. Paths get the call's number from 0 (warm-up calls first), so the ids they write never reach below
    the ones they are given for (the N faces stay as they were)."""
    times: dict[str, list[float]] = {k: [] for k in paths}
    for i in range(-warmup, reps):
        for name, fn in paths.items():
            t = time.perf_counter()
            fn(i + warmup)
            if i >= 0:
                times[name].append(time.perf_counter() - t)
    return {k: _stats(v) for k, v in times.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=100_000)
    p.add_argument("--probes", type=int, default=400)
    p.add_argument("--writes", type=int, default=200, help="one-face writes per path")
    p.add_argument("--batches", type=int, default=10, help="5,000-face upserts per path")
    p.add_argument("--out", default="reports/milvus-api.json")
    args = p.parse_args()
    warnings.simplefilter("ignore", DeprecationWarning)  # the ORM's warnings, once per call
    from pymilvus import Collection, MilvusClient, __version__, connections

    syn = Synthetic(args.size)
    probes = syn.probes(args.probes)
    out: dict[str, Any] = {"size": args.size, "pymilvus": __version__, "k": K}
    with running_server() as server:
        eng = MilvusEngine(MilvusOptions(uri=server.uri, timeout_s=120), "apibench")
        try:
            t = time.perf_counter()
            for start, x in syn.chunks():
                eng.insert(MODEL, list(range(start + 1, start + 1 + len(x))), x)
            out["insert_faces_per_s"] = round(args.size / (time.perf_counter() - t))
            out["build_s"] = round(_wait_indexed(eng, MODEL, args.size), 1)
            name = eng.name(MODEL)
            client = MilvusClient(uri=server.uri, timeout=120)
            connections.connect(alias="apibench", uri=server.uri)
            orm = Collection(name, using="apibench")
            ts = eng.upsert(MODEL, [1], probes[:1])
            params = search_params("HNSW", eng.options.ef, K)

            def public(i: int) -> list[list[tuple[int, float]]]:
                return eng.search(MODEL, probes[i % len(probes)][None], K, guarantee_ts=ts)

            def raw(i: int) -> list[list[tuple[int, float]]]:
                return raw_search(client, name, probes[i % len(probes)], params, ts)

            assert [h[0] for h in raw(0)[0]] == [h[0] for h in public(0)[0]], "the paths disagree"
            out["search"] = _race({"raw_rpc": raw, "public_client": public}, args.probes, warmup=20)
            base = args.size + 10
            one = probes[:1]

            def ids(i: int, path: int, n: int = 1) -> list[int]:
                return list(range(base + (3 * i + path) * n, base + (3 * i + path) * n + n))

            def orm_upsert(i: int, n: int = 1, x: Any = one) -> int:
                return int(orm.upsert([ids(i, 1, n), [0] * n, x]).timestamp)

            def orm_delete(i: int) -> int:
                return int(orm.delete(f"id in {ids(i, 1)}").timestamp)

            out["upsert_1"] = _race(
                {
                    "engine": lambda i: eng.upsert(MODEL, ids(i, 0), one),
                    "orm_collection": orm_upsert,
                    "client_no_ts": lambda i: client.upsert(
                        name, [{"id": ids(i, 2)[0], "scope": 0, "embedding": one[0].tolist()}]
                    ),
                },
                args.writes,
            )
            assert orm_upsert(10**6) > 0, "the ORM gave no timestamp"
            out["delete_1"] = _race(
                {"engine": lambda i: eng.delete(MODEL, ids(i, 0)), "orm_collection": orm_delete}, args.writes
            )
            batch = np.ascontiguousarray(np.resize(probes, (5000, probes.shape[1])), np.float32)
            base += 10 * args.writes
            out["upsert_5000"] = _race(
                {
                    "engine": lambda i: eng.upsert(MODEL, ids(i, 0, 5000), batch),
                    "orm_collection": lambda i: orm_upsert(i, 5000, batch),
                },
                args.batches,
                warmup=2,
            )
            client.close()
        finally:
            eng.drop(MODEL)
            eng.close()
    _write(args.out, out)


if __name__ == "__main__":
    main()
