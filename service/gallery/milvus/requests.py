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
