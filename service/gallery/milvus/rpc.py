"""The Milvus engine's only use of pymilvus internals: writes that return their hybrid timestamp.

Why: the gallery's read-your-writes across replicas rests on each write's Milvus timestamp (stored in PostgreSQL,
passed as ``guarantee_timestamp`` by every later search; docs/MILVUS.md). pymilvus 3.0's public ``MilvusClient``
``insert`` / ``upsert`` / ``delete`` drop it; the ORM ``Collection`` returns it but is deprecated ("will be removed
in PyMilvus 3.1") and its column path converts every float to a Python object (1.5-3.6x the time of a
5,000-face upsert here; bench/milvus_api.py). So a write is built here as a gRPC ``InsertRequest`` /
``UpsertRequest`` from the numpy array (the vectors as one packed buffer) and sent through the client's gRPC
handler (``MilvusClient._get_connection()``, with ``_generate_call_context()``), whose ``MutationResult`` keeps
``.timestamp``. Searches use the public ``MilvusClient.search`` (as fast as a raw ``Search`` RPC with pymilvus
3.0.2: docs/MILVUS.md).

A pymilvus upgrade can change these internals: :data:`VERIFIED` lists the versions tests/milvus/test_rpc.py
passed with against the real server (that test fails on any other installed version, and exercises every call
made here); :func:`check_client` runs when the engine connects: an unverified version is logged as an error once,
missing internals refuse the connection with a clear reason (the request answers 503, it does not crash).
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

log = logging.getLogger("facerec.gallery.milvus")

VERIFIED = frozenset({"3.0.2"})
"""pymilvus versions whose internals this module was tested with (tests/milvus/test_rpc.py, real server)."""

_HANDLER_CALLS = ("upsert", "batch_insert", "delete")
_warned: set[str] = set()


class UnsupportedPymilvus(RuntimeError):
    """The installed pymilvus lacks an internal this module calls."""


def check_client(client: Any) -> None:
    """At connect: log an error (once per version) when pymilvus is not in :data:`VERIFIED`; raise
    :class:`UnsupportedPymilvus` naming what is missing when the internals used here are not there."""
    import pymilvus

    version = str(getattr(pymilvus, "__version__", "?"))
    if version not in VERIFIED and version not in _warned:
        _warned.add(version)
        log.error(
            "pymilvus %s is not one the Milvus engine's write path was verified with (%s): run "
            "tests/milvus/test_rpc.py and add it to service/gallery/milvus/rpc.py's VERIFIED",
            version,
            ", ".join(sorted(VERIFIED)),
        )
    missing = [a for a in ("_get_connection", "_generate_call_context") if not callable(getattr(client, a, None))]
    if not missing:
        handler = client._get_connection()
        for call in _HANDLER_CALLS:
            fn = getattr(handler, call, None)
            params = inspect.signature(fn).parameters if callable(fn) else {}
            if not {"timeout", "context"} <= set(params):
                missing.append(f"handler.{call}(timeout=, context=)")
    try:
        from pymilvus.grpc_gen import milvus_pb2

        for kind in ("InsertRequest", "UpsertRequest"):
            if not hasattr(milvus_pb2, kind):
                missing.append(f"milvus_pb2.{kind}")
    except ImportError:
        missing.append("pymilvus.grpc_gen.milvus_pb2")
    if missing:
        raise UnsupportedPymilvus(
            f"pymilvus {version} lacks what the Milvus engine's writes need ({', '.join(missing)}); "
            f"verified: {', '.join(sorted(VERIFIED))}"
        )


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def mutation_request(op: str, name: str, ids: Sequence[int], vectors: npt.NDArray[np.float32], scope: int = 0) -> Any:
    """The gRPC ``InsertRequest`` / ``UpsertRequest`` of rows ``(id, scope, embedding)``, built column-wise from
    the numpy array: the vectors go in as one packed buffer (protobuf wire format of ``FloatArray``: field 1,
    length-delimited, little-endian float32), not float by float as pymilvus's row path does."""
    from pymilvus.grpc_gen import milvus_pb2, schema_pb2

    n, dim = vectors.shape
    kind = milvus_pb2.UpsertRequest if op == "upsert" else milvus_pb2.InsertRequest
    req = kind(collection_name=name, num_rows=n)
    f_id = req.fields_data.add(type=schema_pb2.DataType.Int64, field_name="id")
    f_id.scalars.long_data.data.extend(int(i) for i in ids)
    f_scope = req.fields_data.add(type=schema_pb2.DataType.Int64, field_name="scope")
    f_scope.scalars.long_data.data.extend([int(scope)] * n)
    f_vec = req.fields_data.add(type=schema_pb2.DataType.FloatVector, field_name="embedding")
    f_vec.vectors.dim = int(dim)
    raw = np.ascontiguousarray(vectors, "<f4").tobytes()
    f_vec.vectors.float_vector.MergeFromString(b"\x0a" + _varint(len(raw)) + raw)
    return req


def mutate(client: Any, op: str, name: str, payload: Any, timeout: float) -> int:
    """Send an ``insert`` / ``upsert`` (``payload``: a :func:`mutation_request`) or a ``delete`` (``payload``: the
    ids) through the client's gRPC handler; returns the mutation's hybrid timestamp. The request is complete, so
    the handler makes no ``describe_collection`` round trip (it is given an empty schema)."""
    conn = client._get_connection()
    context = client._generate_call_context()
    schema: dict[str, list[Any]] = {"fields": []}
    if op == "upsert":
        result = conn.upsert(name, [], upsert_param=payload, schema=schema, timeout=timeout, context=context)
    elif op == "insert":
        result = conn.batch_insert(name, [], insert_param=payload, schema=schema, timeout=timeout, context=context)
    elif op == "delete":
        result = conn.delete(name, f"id in {[int(i) for i in payload]}", timeout=timeout, context=context)
    else:
        raise ValueError(f"unknown mutation {op!r}")
    return int(getattr(result, "timestamp", 0) or 0)
