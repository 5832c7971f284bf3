"""Milvus as the vector index of a PostgreSQL gallery: one collection per (gallery, model id), the PostgreSQL face id
as primary key, upserts only (Milvus does not reject a duplicate primary key on insert; upsert replaces).

Collection ``facerec_<gallery uuid[:16]>_<sha1(model id)[:16]>``: ``id`` INT64 primary key (the face id),
``scope`` INT64 partition key (0 today; ready for scoped galleries), ``embedding`` FLOAT_VECTOR of the model's
dimension (fixed per collection), metric L2. Milvus's "L2" distance is the *squared* L2 distance; the gallery
recomputes exact distances from PostgreSQL anyway.

Consistency: a write returns Milvus's hybrid timestamp of the mutation; a search passes the newest such timestamp
any replica recorded (``guarantee_timestamp``, level ``Customized``) so that it sees every acknowledged write,
without paying Strong's wait for the next time tick on every search (measured in docs/MILVUS.md). Every failure
to reach Milvus (down, timeout, not loaded) is :class:`VectorIndexUnavailable`; the client reconnects on the next
call. Everything goes through pymilvus's public ``MilvusClient`` except the server's writes, which need the
timestamp: :mod:`service.gallery.milvus.rpc` holds those (pymilvus internals, checked at connect).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import numpy.typing as npt

from service.gallery.errors import VectorIndexUnavailable
from service.gallery.milvus import rpc
from service.gallery.milvus.indexes import INDEX_PARAMS, search_params
from service.gallery.milvus.options import MAX_K, MilvusOptions, collection_name

log = logging.getLogger("facerec.gallery.milvus")

CREATE_TIMEOUT_S = 60.0
"""Deadline of creating a collection (which builds its index and loads it): seconds on an idle server, more on a
busy one; once per model, so it may wait longer than ``timeout_s`` rather than refuse a model's first faces."""


COLLECTION_NOT_LOADED = 101
"""Milvus's error code for a search on a collection that exists but is not loaded (pymilvus names no constant)."""

LOAD_WAIT_S = 600.0
"""Longest a replica's start waits for Milvus to load a collection before it reports ready anyway (its searches
then wait up to ``timeout_s`` each for the load, or answer 503)."""


def _not_loaded(exc: BaseException) -> bool:
    return getattr(exc, "code", None) == COLLECTION_NOT_LOADED or "collection not loaded" in str(exc)


def _reason(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:200]


class MilvusEngine:
    """A thread-safe Milvus client for one gallery; every method raises :class:`VectorIndexUnavailable` when
    Milvus cannot answer. The connection is made on first use and again after a failure."""

    def __init__(self, options: MilvusOptions, gallery_uuid: str) -> None:
        self.options = options
        self.gallery_uuid = gallery_uuid
        self._client: Any = None
        self._lock = threading.Lock()
        self._ready: set[str] = set()
        """Collections created and loaded by this engine."""
        self._seen: set[str] = set()
        """Collections a search found to exist (no ``has_collection`` round trip per search)."""
        self._down_until = 0.0
        self._down_why = ""

    # ------------------------------------------------------------------ plumbing
    def _connect(self) -> Any:
        with self._lock:
            if self._client is None:
                from pymilvus import MilvusClient

                o = self.options
                client = MilvusClient(uri=o.uri, token=o.token or "", timeout=o.timeout_s)
                try:
                    if not o.lite:
                        rpc.check_client(client)  # the write path's pymilvus internals are there
                except rpc.UnsupportedPymilvus:
                    client.close()
                    raise
                self._client = client
            return self._client

    def _call(self, what: str, fn: Any, *args: Any, probing: bool = False, **kwargs: Any) -> Any:
        """``fn(client, ...)``; any failure -> VectorIndexUnavailable (and a fresh connection next time)."""
        if not probing:
            self.check_up()
        try:
            client = self._connect()
            result = fn(client, *args, **kwargs)
        except VectorIndexUnavailable:
            raise
        except Exception as e:
            log.warning("Milvus %s failed: %s: %s", what, type(e).__name__, _reason(e))
            self._drop_client()
            self._down_why = f"{what}: {_reason(e)}"
            self._down_until = time.monotonic() + self.options.retry_after_s
            raise self._unavailable() from e
        self._down_until = 0.0
        return result

    def client(self) -> Any:
        """The connected pymilvus ``MilvusClient`` (VectorIndexUnavailable if Milvus cannot be reached)."""
        return self._call("connect", lambda c: c)

    def _unavailable(self) -> VectorIndexUnavailable:
        return VectorIndexUnavailable(
            f"the vector index (Milvus at {self.where}) is unavailable ({self._down_why}); "
            "nothing was acknowledged. Retry shortly"
        )

    def check_up(self) -> None:
        """Raise VectorIndexUnavailable at once while the last failure is recent (see ``retry_after_s``)."""
        if self._down_until and time.monotonic() < self._down_until:
            raise self._unavailable()

    def probe(self) -> bool:
        """After a failure, ask Milvus whether it is back (clears the fast-fail window); True when it answers."""
        if not self._down_until:
            return True
        try:
            self._call("ping", lambda c: c.list_collections(timeout=self.options.timeout_s), probing=True)
        except VectorIndexUnavailable:
            return False
        return True

    def _drop_client(self) -> None:
        with self._lock:
            client, self._client = self._client, None
            self._ready.clear()
            self._seen.clear()
        if client is not None:
            with contextlib.suppress(Exception):  # closing a broken client
                client.close()

    @property
    def where(self) -> str:
        """The endpoint without credentials (a milvus-lite file: its name)."""
        uri = self.options.uri
        return uri.rsplit("@", 1)[-1] if "://" in uri else uri.rsplit("/", 1)[-1]

    def close(self) -> None:
        self._drop_client()

    # ------------------------------------------------------------------ collections
    def name(self, model_id: str) -> str:
        return collection_name(self.gallery_uuid, model_id)

    def ensure_collection(self, model_id: str, dim: int) -> str:
        """Create (and load) the collection of ``model_id`` unless it exists; returns its name."""
        name = self.name(model_id)
        if name in self._ready:
            return name

        t = self.options.timeout_s

        def make(client: Any) -> None:
            if not client.has_collection(name, timeout=t):
                from pymilvus import DataType, MilvusClient

                schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False, description=model_id)
                schema.add_field("id", DataType.INT64, is_primary=True)
                schema.add_field("scope", DataType.INT64, is_partition_key=True)
                schema.add_field("embedding", DataType.FLOAT_VECTOR, dim=int(dim))
                index = client.prepare_index_params()
                kind = self.options.index_type.upper()
                index.add_index(
                    field_name="embedding", index_type=kind, metric_type="L2", params=dict(INDEX_PARAMS.get(kind, {}))
                )
                try:
                    client.create_collection(
                        name,
                        schema=schema,
                        index_params=index,
                        consistency_level="Bounded",
                        num_partitions=self.options.num_partitions,
                        timeout=max(t, CREATE_TIMEOUT_S),
                    )
                except Exception:
                    if not client.has_collection(name, timeout=t):  # another replica made it meanwhile: fine
                        raise
            client.load_collection(name, timeout=t)

        self._call("create collection", make)
        self._ready.add(name)
        return name

    def wait_loaded(self, model_id: str, wait_s: float = LOAD_WAIT_S) -> bool:
        """Load the collection of ``model_id`` unless Milvus has it loaded, and wait for the load (up to
        ``wait_s``); True when it is loaded or does not exist yet, False when Milvus cannot be reached or the load
        took longer (both logged by the call)."""
        name = self.name(model_id)
        t = self.options.timeout_s
        try:
            if not self._call("has collection", lambda c: c.has_collection(name, timeout=t)):
                return True  # made (and loaded) by the model's first enrolment
            self._call("load collection", lambda c: c.load_collection(name, timeout=max(t, wait_s)))
        except VectorIndexUnavailable:
            return False
        self._ready.add(name)
        return True

    def collections(self) -> dict[str, str]:
        """This gallery's collections: name -> model id (from the collection description)."""

        t = self.options.timeout_s

        def listing(client: Any) -> dict[str, str]:
            prefix = f"facerec_{self.gallery_uuid[:16]}_"
            out: dict[str, str] = {}
            for name in client.list_collections(timeout=t):
                if name.startswith(prefix):
                    out[name] = str(client.describe_collection(name, timeout=t).get("description", ""))
            return out

        result: dict[str, str] = self._call("list collections", listing)
        return result

    def drop(self, model_id: str) -> None:
        """Drop the collection of ``model_id`` (rebuild)."""
        name = self.name(model_id)
        self.drop_name(name)

    def drop_name(self, name: str) -> None:
        self._ready.discard(name)
        self._seen.discard(name)
        t = self.options.timeout_s
        self._call(
            "drop collection",
            lambda c: c.drop_collection(name, timeout=t) if c.has_collection(name, timeout=t) else None,
        )

    # ------------------------------------------------------------------ writes
    def upsert(self, model_id: str, ids: Sequence[int], vectors: npt.NDArray[np.float32], scope: int = 0) -> int:
        """Insert or replace faces ``ids`` with ``vectors`` (n, dim); returns the mutation's hybrid timestamp."""
        return self._write("upsert", model_id, ids, vectors, scope)

    def insert(self, model_id: str, ids: Sequence[int], vectors: npt.NDArray[np.float32], scope: int = 0) -> int:
        """Insert faces ``ids`` without replacing rows of the same id (bulk loads into a fresh collection: no
        delete pass; a face also upserted meanwhile is held twice, harmless as hits are deduplicated by id)."""
        return self._write("insert", model_id, ids, vectors, scope)

    def _write(self, op: str, model_id: str, ids: Sequence[int], vectors: npt.NDArray[np.float32], scope: int) -> int:
        if not len(ids):
            return 0
        x = np.ascontiguousarray(vectors, np.float32)
        name = self.ensure_collection(model_id, int(x.shape[1]))
        step = self.options.write_batch
        if not self.options.lite and len(ids) > step:  # disjoint ids: the requests commute, send them at once
            spans = [(s, min(s + step, len(ids))) for s in range(0, len(ids), step)]
            with ThreadPoolExecutor(max_workers=self.options.write_concurrency) as pool:
                stamps = pool.map(
                    lambda se: self._write(op, model_id, ids[se[0] : se[1]], x[se[0] : se[1]], scope), spans
                )
                return max(stamps)
        if self.options.lite:
            rows = [{"id": int(i), "scope": int(scope), "embedding": v.tolist()} for i, v in zip(ids, x, strict=True)]
            return int(self._call(op, self._mutate, op, name, rows))
        return int(self._call(op, self._mutate, op, name, rpc.mutation_request(op, name, ids, x, scope)))

    def delete(self, model_id: str, ids: Sequence[int]) -> int:
        """Delete faces ``ids`` from the collection of ``model_id`` (absent ids are fine); returns the hybrid
        timestamp of the deletion (0 when the collection does not exist)."""
        if not len(ids):
            return 0
        name = self.name(model_id)

        def run(client: Any) -> int:
            if name not in self._ready and not client.has_collection(name, timeout=self.options.timeout_s):
                return 0
            return int(self._mutate(client, "delete", name, [int(i) for i in ids]))

        return int(self._call("delete", run))

    def _mutate(self, client: Any, op: str, name: str, payload: Any) -> int:
        """Run an insert / upsert (a ready request) / delete and return the mutation's timestamp
        (:func:`rpc.mutate`: the public client drops it); milvus-lite's consistency is immediate, its timestamps
        are not needed (public calls, 0)."""
        timeout = self.options.timeout_s
        if not self.options.lite:
            return rpc.mutate(client, op, name, payload, timeout)
        if op == "delete":
            client.delete(name, ids=payload, timeout=timeout)
        else:
            getattr(client, op)(name, payload, timeout=timeout)
        return 0

    # ------------------------------------------------------------------ reads
    def search(
        self, model_id: str, probes: npt.NDArray[np.float32], k: int, *, guarantee_ts: int = 0
    ) -> list[list[tuple[int, float]]]:
        """Per probe, up to ``k`` ``(face id, squared L2)`` nearest first. ``guarantee_ts``: see every write up
        to this hybrid timestamp (0: Milvus's Bounded staleness). A missing collection gives empty lists."""
        name = self.name(model_id)
        k = int(min(max(k, 1), MAX_K))
        params = search_params(self.options.index_type, self.options.ef, k)
        extra: dict[str, Any] = {}
        if not self.options.lite:
            if guarantee_ts > 0:
                extra = {"consistency_level": "Customized", "guarantee_timestamp": int(guarantee_ts)}
            else:
                extra = {"consistency_level": "Bounded"}

        def run(client: Any) -> Any:
            if name not in self._ready and name not in self._seen:
                if not client.has_collection(name, timeout=self.options.timeout_s):
                    return None
                self._seen.add(name)
            data = [v.tolist() for v in np.asarray(probes, np.float32)]
            t = self.options.timeout_s
            try:
                try:  # no output fields: the primary key comes with every hit
                    res = client.search(name, data=data, limit=k, search_params=params, timeout=t, **extra)
                except Exception as e:
                    if not _not_loaded(e):
                        raise
                    # a restarted Milvus reloading it, or released: wait for that load (or start it), up to t
                    client.load_collection(name, timeout=t)
                    res = client.search(name, data=data, limit=k, search_params=params, timeout=t, **extra)
            except Exception as e:
                self._seen.discard(name)
                from pymilvus.exceptions import ErrorCode

                if getattr(e, "code", None) == ErrorCode.COLLECTION_NOT_FOUND:  # dropped meanwhile (a rebuild)
                    return None
                raise
            return [[(int(h["id"]), float(h["distance"])) for h in hits] for hits in res]

        res = self._call("search", run)
        if res is None:
            return [[] for _ in range(len(probes))]
        result: list[list[tuple[int, float]]] = res
        return result

    def iter_ids_of(self, name: str, batch: int = 10_000) -> Iterator[list[int]]:
        t = self.options.timeout_s

        def start(client: Any) -> Any:
            if not client.has_collection(name, timeout=t):
                return None
            # The iterator reads at a client-side timestamp without waiting (a 2.3 server has no mvccTs): one
            # Strong query first makes the query nodes catch up with every write before now.
            client.query(name, filter="id < 0", output_fields=["id"], consistency_level="Strong", timeout=t)
            return client.query_iterator(
                name, batch_size=batch, filter="id >= 0", output_fields=["id"], consistency_level="Strong", timeout=t
            )

        it = self._call("query", start)
        if it is None:
            return
        try:
            while True:
                rows = self._call("query", lambda _c: it.next())
                if not rows:
                    break
                yield [int(r["id"]) for r in rows]
        finally:
            with contextlib.suppress(Exception):  # an iterator of a lost connection
                it.close()

    def get_vectors(self, model_id: str, ids: Sequence[int]) -> dict[int, npt.NDArray[np.float32]]:
        """The stored vectors of ``ids`` (reconcile's stale-vector check), Strong consistency."""
        name = self.name(model_id)
        if not len(ids):
            return {}

        def run(client: Any) -> Any:
            return client.query(
                name,
                filter=f"id in {[int(i) for i in ids]}",
                output_fields=["id", "embedding"],
                consistency_level="Strong",
                timeout=self.options.timeout_s,
            )

        rows = self._call("query", run)
        return {int(r["id"]): np.asarray(r["embedding"], np.float32) for r in rows}

    def ping(self) -> None:
        """Raise VectorIndexUnavailable unless Milvus answers."""
        self._call("ping", lambda c: c.list_collections(timeout=self.options.timeout_s), probing=True)
