"""The write requests built from numpy decode to exactly the rows given (ids, scope, every float32 of every
vector), for both kinds, including a vector buffer longer than one varint byte can size."""

from __future__ import annotations

import numpy as np
from pymilvus.grpc_gen import milvus_pb2

from service.gallery.milvus.requests import mutation_request


def test_vectors_ids_and_scope_round_trip() -> None:
    x = np.random.default_rng(1).standard_normal((300, 128)).astype(np.float32)
    ids = list(range(10**12, 10**12 + 300))
    for op, kind in (("upsert", milvus_pb2.UpsertRequest), ("insert", milvus_pb2.InsertRequest)):
        req = kind.FromString(mutation_request(op, "c", ids, x, scope=3).SerializeToString())
        assert (req.collection_name, req.num_rows) == ("c", 300)
        f_id, f_scope, f_vec = req.fields_data
        assert list(f_id.scalars.long_data.data) == ids
        assert set(f_scope.scalars.long_data.data) == {3}
        assert f_vec.vectors.dim == 128
        assert np.array_equal(np.array(f_vec.vectors.float_vector.data, np.float32).reshape(300, 128), x)


def test_search_hits_split_by_topks_and_params_per_index() -> None:
    """Hits are read per probe from the reply's flat id and score lists (``topks`` per probe, some short)."""
    from pymilvus.grpc_gen import schema_pb2

    from service.gallery.milvus.requests import search_hits, search_params

    res = schema_pb2.SearchResultData(num_queries=3, top_k=2, topks=[2, 0, 1], scores=[0.5, 0.75, 0.25])
    res.ids.int_id.data.extend([7, 3, 10**12])
    assert search_hits(schema_pb2.SearchResultData.FromString(res.SerializeToString())) == [
        [(7, 0.5), (3, 0.75)],
        [],
        [(10**12, 0.25)],
    ]
    assert search_params("HNSW", 128, 40) == {"metric_type": "L2", "params": {"ef": 128}}
    assert search_params("hnsw", 16, 40)["params"] == {"ef": 40}
    assert search_params("IVF_SQ8", 128, 40)["params"] == {"nprobe": 16}
    assert search_params("DISKANN", 10, 40)["params"] == {"search_list": 40}
    assert search_params("FLAT", 128, 40)["params"] == {}
