"""Milvus index parameters per index type: how a collection's index is built and how it is searched (metric L2)."""

from __future__ import annotations

from typing import Any

INDEX_PARAMS: dict[str, dict[str, Any]] = {
    "HNSW": {"M": 16, "efConstruction": 200},
    "HNSW_SQ": {"M": 16, "efConstruction": 200, "sq_type": "SQ8"},
    "IVF_SQ8": {"nlist": 1024},
    "IVF_FLAT": {"nlist": 1024},
    "DISKANN": {},
    "FLAT": {},
    "AUTOINDEX": {},
}
"""Build parameters per index type (the sizing table in docs/MILVUS.md measured these)."""


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
