"""Where Milvus is and how facerec's collections are named, made and searched (:class:`MilvusOptions`)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

MAX_K = 16384
"""The most neighbours one Milvus search returns per probe (Milvus's ``topk`` limit)."""


@dataclass(frozen=True, slots=True)
class MilvusOptions:
    """Where Milvus is and how collections are made and searched."""

    uri: str
    token: str | None = None
    index_type: str = "HNSW"
    timeout_s: float = 5.0
    ef: int = 128
    """HNSW candidate list at search time (raised to the faces fetched); ``nprobe`` for IVF indexes / 8."""
    num_partitions: int = 1
    """Partitions the ``scope`` partition key hashes into. One: Milvus 2.3.5 spreads upserted rows over every
    partition whatever their key, and a search then runs one index per partition's segment (at 100k faces, 16
    partitions: ~10 ms a search instead of ~2 ms; docs/MILVUS.md)."""
    write_batch: int = 5_000
    """Rows per insert / upsert request; a larger write is split into requests sent ``write_concurrency`` at a
    time (its ids are distinct, so the requests commute)."""
    write_concurrency: int = 2
    compact_delay_s: float = 3600.0
    """Seconds from an erasure to the compaction that removes its vectors from Milvus's segments (:mod:`.compaction`;
    erasures in that window share one)."""
    retry_after_s: float = 1.0
    """After a failure, calls fail at once for this long (no queue of requests each waiting ``timeout_s``);
    the gallery's sync thread probes Milvus every second and clears it as soon as Milvus answers."""

    @property
    def lite(self) -> bool:
        """milvus-lite: a local ``.db`` file, opened by this process only."""
        return "://" not in self.uri


def collection_name(gallery_uuid: str, model_id: str) -> str:
    """The collection of one gallery's faces of ``model_id``."""
    return f"facerec_{gallery_uuid[:16]}_{hashlib.sha1(model_id.encode()).hexdigest()[:16]}"
