"""Milvus write requests built straight from numpy: pymilvus's row and column paths turn every float of a vector
into a Python object (seconds per 100k faces); here the vectors go into the request as one buffer."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt


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


def search_params(index_type: str, ef: int, k: int) -> dict[str, Any]:
    """Search parameters of an index type: HNSW ``ef`` (at least ``k``), IVF ``nprobe`` = ef / 8, DiskANN
    ``search_list`` (at least ``k``); metric L2."""
    kind = index_type.upper()
    params: dict[str, Any] = {}
    if kind.startswith("HNSW"):
        params["ef"] = int(min(max(ef, k), 32768))
    elif kind.startswith("IVF"):
        params["nprobe"] = max(1, ef // 8)
    elif kind == "DISKANN":
        params["search_list"] = int(min(max(ef, k), 65535))
    return {"metric_type": "L2", "params": params}


def search_request(
    name: str, probes: npt.NDArray[np.float32], k: int, params: dict[str, Any], consistency: dict[str, Any]
) -> Any:
    """The gRPC ``SearchRequest`` of ``probes`` (n, dim) for ``k`` neighbours each, on field ``embedding`` with no
    output fields (the primary key comes with every hit); ``consistency``: ``consistency_level`` and, for
    ``Customized``, ``guarantee_timestamp`` (pymilvus's own request builder, without its client-side checks)."""
    from pymilvus.client import ts_utils
    from pymilvus.client.prepare import Prepare

    kwargs = dict(consistency)
    default = ts_utils.construct_guarantee_ts(name, kwargs)
    return Prepare.search_requests_with_expr(
        collection_name=name,
        anns_field="embedding",
        param=params,
        limit=k,
        data=[v.tolist() for v in np.asarray(probes, np.float32)],
        use_default_consistency=default,
        **kwargs,
    )


def search_hits(results: Any) -> list[list[tuple[int, float]]]:
    """Per probe, ``(primary key, distance)`` read straight from a ``SearchResultData`` (pymilvus's result
    objects cost ~1-2 ms per search here): ``topks`` hits per probe, their ids and scores in one flat list each."""
    ids, scores = results.ids.int_id.data, results.scores
    out: list[list[tuple[int, float]]] = []
    pos = 0
    for n in results.topks:
        out.append([(int(i), float(s)) for i, s in zip(ids[pos : pos + n], scores[pos : pos + n], strict=True)])
        pos += n
    return out
