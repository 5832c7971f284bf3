"""``MilvusGallery``: the PostgreSQL gallery (the truth: subjects, faces, embeddings, crops, staging) with Milvus
as its vector index instead of pgvector. Implements :class:`service.gallery.base.Gallery` with the guarantees of
:class:`PostgresGallery` unchanged:

- Enrolment commits the faces and their outbox rows in one PostgreSQL transaction, then drains the outbox into
  Milvus before returning. If Milvus cannot take them, the faces are deleted again and the call raises
  :class:`VectorIndexUnavailable` (503): nothing is acknowledged that a search could miss. A crash between the
  two stores leaves the outbox row, applied by the next drain of any replica (each replica drains every second);
  PostgreSQL going away after the commit leaves it too, and the enrolment is acknowledged (it is stored).
- Search asks Milvus for candidates with the newest write timestamp any replica recorded (read-your-writes across
  replicas), adds the faces still pending in the outbox nearest each probe (compared exactly, in a copy kept in
  memory and refreshed from PostgreSQL on every search, :mod:`.pending`: a face committed but not yet in Milvus is
  found too), and keeps only faces that PostgreSQL holds with this model, with their exact distances from
  PostgreSQL's embeddings. So an erased face is never returned, even while Milvus still holds its
  vector (delete lag, compaction), and an orphan or stale-model vector never is.
- Erasure commits in PostgreSQL (then drains, best effort): it works while Milvus is down.

Conventions: embeddings are float32 unit vectors; distances are L2 in [0, 2]; similarity is ``1 - d**2 / 2``.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import psycopg
from psycopg_pool import ConnectionPool

from service.gallery.errors import StorageError, VectorIndexUnavailable
from service.gallery.grouping import group_subjects, nearest_subjects
from service.gallery.milvus import outbox
from service.gallery.milvus.compaction import Compactor
from service.gallery.milvus.engine import MilvusEngine
from service.gallery.milvus.options import MAX_K, MilvusOptions
from service.gallery.milvus.pending import PendingFaces, PendingView
from service.gallery.milvus.reconcile import reconcile_if_free
from service.gallery.postgres.gallery import PostgresGallery
from service.gallery.postgres.vectors import VectorOptions
from service.gallery.types import Candidate, FaceRecord, GalleryStats, IndexInfo, NewFace
from service.gallery.validation import check_limit, unit_vectors

log = logging.getLogger("facerec.gallery.milvus")

COMPACT_POLL_S = 5.0
"""How often a replica looks for erasures due for compaction and polls its compaction in flight, seconds."""

_CANDIDATES = (
    "SELECT f.id, s.id, s.name, f.embedding FROM faces f JOIN subjects s ON s.pk = f.subject_pk "
    "WHERE f.id = ANY(%(ids)s) AND f.model_id = %(m)s"
)
"""The candidates (Milvus's and the pending faces nearest the probes) that PostgreSQL still holds with this model,
with their embeddings."""


class MilvusGallery(PostgresGallery):
    """The gallery of one PostgreSQL database, searched through Milvus (open with :func:`.backend.open_milvus`).

    ``sync_interval_s``: how often a background thread drains outbox rows left by a crashed writer and checks
    that Milvus is back; ``reconcile_interval_s``: how often it reconciles (0 = never; one replica at a time)."""

    def __init__(
        self,
        pool: ConnectionPool[psycopg.Connection[Any]],
        milvus: MilvusOptions,
        *,
        options: VectorOptions | None = None,
        sync_interval_s: float = 1.0,
        reconcile_interval_s: float = 0.0,
    ) -> None:
        self._held = threading.local()
        super().__init__(pool, options=options)
        self.engine = MilvusEngine(milvus, self.gallery_uuid)
        self.pending_faces = PendingFaces()
        self.compactor = Compactor(self._conn, self.engine, delay_s=milvus.compact_delay_s)
        with self._conn() as conn:
            outbox.install(conn)
        self._stop = threading.Event()
        self._reconcile_every = reconcile_interval_s
        self._thread: threading.Thread | None = None
        self._compact_thread: threading.Thread | None = None
        if sync_interval_s > 0:
            self._thread = threading.Thread(
                target=self._sync_loop, args=(sync_interval_s,), name="facerec-milvus-sync", daemon=True
            )
            self._thread.start()
            if not milvus.lite:
                self._compact_thread = threading.Thread(
                    target=self._compact_loop, name="facerec-milvus-compact", daemon=True
                )
                self._compact_thread.start()

    def _ensure_vector_index(self, conn: psycopg.Connection[Any], model_id: str) -> None:
        """No pgvector index: Milvus makes the model's collection on its first upsert."""

    def check_available(self) -> None:
        """PostgreSQL answers and Milvus has not failed recently (the sync thread probes it while it is down)."""
        super().check_available()
        self.engine.check_up()

    # ================================================================== outbox
    def drain(self) -> outbox.DrainResult:
        """Apply every pending outbox row to Milvus (VectorIndexUnavailable if it cannot)."""
        with self._conn() as conn:
            return outbox.drain(conn, self.engine)

    def _drain_quietly(self, why: str) -> None:
        try:
            self.drain()
        except VectorIndexUnavailable as e:
            log.warning("%s is committed in PostgreSQL; Milvus will get it when it is back (%s)", why, e)

    def pending(self) -> int:
        """Outbox rows not yet in Milvus."""
        with self._conn() as conn:
            return outbox.pending(conn)

    # ================================================================== writes
    def add_faces_many(self, batch: Mapping[str, Sequence[NewFace]]) -> list[FaceRecord]:
        self.engine.check_up()  # Milvus known down: refuse before writing anything
        records = super().add_faces_many(batch)
        if not records:
            return records
        try:
            self.drain()
        except VectorIndexUnavailable:
            ids = [r.id for r in records]
            with self._conn() as conn:
                conn.execute("DELETE FROM faces WHERE id = ANY(%s)", (ids,))  # outbox rows: drained as deletes
            log.warning("enrolment of %d face(s) withdrawn: Milvus could not index them", len(ids))
            raise
        except StorageError as e:  # PostgreSQL went away after the commit: stored, and found through the outbox
            log.warning("%d enrolled face(s) committed; Milvus will get them from the outbox (%s)", len(records), e)
        return records

    def delete_face(self, face_id: int) -> None:
        super().delete_face(face_id)
        self._drain_quietly(f"the erasure of face {face_id}")

    def delete_subject(self, subject_id: str) -> int:
        n = super().delete_subject(subject_id)
        self._drain_quietly(f"the erasure of subject {subject_id}")
        return n

    def switch_model(self, model_id: str) -> int:
        n = super().switch_model(model_id)
        self._drain_quietly(f"the switch of {n} faces to {model_id}")
        return n

    # ================================================================== search
    @contextlib.contextmanager
    def _conn(self) -> Iterator[psycopg.Connection[Any]]:
        """The connection this thread's search holds, else a pooled one (PostgresGallery._conn)."""
        held = getattr(self._held, "conn", None)
        if held is not None:
            yield held
            return
        with super()._conn() as conn:
            yield conn

    def search(self, probes: npt.NDArray[np.float32], *, model_id: str, top_k: int = 5) -> list[list[Candidate]]:
        """Holds one pooled connection for both of its PostgreSQL round trips (a checkout costs ~1 ms here)."""
        with super()._conn() as conn:
            self._held.conn = conn
            try:
                return self._search(probes, model_id=model_id, top_k=top_k)
            finally:
                self._held.conn = None

    def _search(self, probes: npt.NDArray[np.float32], *, model_id: str, top_k: int = 5) -> list[list[Candidate]]:
        check_limit("top_k", top_k)
        q = unit_vectors(probes, "probe")
        with self._conn() as conn:
            state = self.pending_faces.state(conn, model_id)  # one round trip (a second when a backlog appears)
        return nearest_subjects(
            lambda k: self._fetch(q, model_id, state.write_ts, state.pending, k, top_k),
            faces_by_model=state.faces_by_model,
            model_id=model_id,
            probes=len(q),
            top_k=top_k,
            overfetch=self.options.overfetch,
        )

    def _fetch(
        self, q: npt.NDArray[np.float32], model_id: str, ts: int, pending: PendingView, k: int, top_k: int
    ) -> list[list[Candidate]]:
        """Per probe, the subjects of its ``k`` nearest faces that PostgreSQL holds: Milvus's ``k`` nearest and the
        ``k`` nearest pending faces. Milvus may still return vectors of erased faces (a delete it has not applied
        yet at the guarantee timestamp, an orphan), and the pending copy faces erased since its refresh: they are
        dropped here, after the cut at ``k``, so a probe that lost ``d`` of them and came back short is asked
        again for ``k + d`` neighbours (an erased face never takes the place of a live one)."""
        n = k
        while True:
            with self._conn() as conn:
                near, near_ts = pending.nearest(conn, model_id, q, n)
            hits = [[fid for fid, _ in h] for h in self.engine.search(model_id, q, n, guarantee_ts=max(ts, near_ts))]
            rows, held = self._exact(q, model_id, hits, near, top_k)
            want = max(
                (
                    k + len(got) - len(set(got) & held)
                    for r, per_probe in zip(rows, zip(hits, near, strict=True), strict=True)
                    if len(r) < top_k
                    for got in per_probe
                    if len(got) == n
                ),
                default=0,
            )
            if want <= n or n >= MAX_K:
                return rows
            n = min(want, MAX_K)

    def _exact(
        self, q: npt.NDArray[np.float32], model_id: str, hits: list[list[int]], near: list[list[int]], top_k: int
    ) -> tuple[list[list[Candidate]], set[int]]:
        """Milvus's candidates and the pending faces nearest the probes that PostgreSQL holds, ranked by exact
        distance (ties by face id); and the candidate ids PostgreSQL holds."""
        ids = sorted({fid for per_probe in (*hits, *near) for fid in per_probe})
        with self._conn() as conn:
            found = conn.cursor(binary=True).execute(_CANDIDATES, {"m": model_id, "ids": ids}).fetchall()
        if not found:
            return [[] for _ in range(len(q))], set()
        fids = np.array([int(r[0]) for r in found], np.int64)
        who = [(str(r[1]), str(r[2])) for r in found]
        embs = np.stack([outbox._vec(r[3]) for r in found])
        out: list[list[Candidate]] = []
        for p in q:
            d = np.linalg.norm(embs - p[None, :], axis=1)
            faces = [(int(fids[i]), *who[i], float(d[i])) for i in np.lexsort((fids, d))]
            out.append(group_subjects(faces, top_k))
        return out, {int(f) for f in fids}

    def prepare_search(self, model_id: str) -> None:
        """Before this replica reports ready: have Milvus load the model's collection and wait for it (a restarted
        Milvus reloading it, or one that released it), so that a ready replica's searches do not answer 503
        ``collection not loaded``. Milvus unreachable: returns at once (searches answer 503 until it is back, as
        on a running replica)."""
        t = time.monotonic()
        if self.engine.wait_loaded(model_id):
            log.info("Milvus collection of %s loaded (%.1f s)", model_id, time.monotonic() - t)
        else:
            log.warning(
                "Milvus could not load the collection of %s at start; searches answer 503 until it can", model_id
            )

    # ================================================================== maintenance
    def stats(self) -> GalleryStats:
        base = super().stats()
        kind = "milvus_" + self.engine.options.index_type.lower()
        indexes = {
            m: IndexInfo(kind=kind, live=info.live, hnsw=info.live, flat=0, tombstones=0, building=False)
            for m, info in base.indexes.items()
        }
        return GalleryStats(
            subjects=base.subjects,
            faces=base.faces,
            faces_by_model=base.faces_by_model,
            indexes=indexes,
            snapshots=base.snapshots,
            last_change=base.last_change,
        )

    def _sync_loop(self, interval_s: float) -> None:
        """Drain what crashed writers left and notice Milvus coming back; reconcile now and then. A failure is
        logged as a warning when it starts (or changes), its repeats at debug level, and the recovery once."""
        last_reconcile = time.monotonic()
        failing: str | None = None
        while not self._stop.wait(interval_s):
            try:
                self.engine.probe()
                if self.pending():
                    self.drain()
                if self._reconcile_every and time.monotonic() - last_reconcile >= self._reconcile_every:
                    last_reconcile = time.monotonic()
                    reconcile_if_free(self)
            except Exception as e:
                reason = f"{type(e).__name__}: {e}"
                (log.debug if reason == failing else log.warning)("Milvus sync pass failed: %s", reason)
                failing = reason
            else:
                if failing is not None:
                    log.info("Milvus sync passes work again")
                failing = None

    def _compact_loop(self) -> None:
        """Every ``COMPACT_POLL_S``: request or follow the compaction that removes erased vectors (a failure is
        logged and retried later; it never reaches a request)."""
        while not self._stop.wait(COMPACT_POLL_S):
            try:
                self.compactor.run_once()
            except Exception as e:
                log.debug("Milvus compaction step failed: %s: %s", type(e).__name__, e)

    def close(self) -> None:
        """Stop the background threads, close the Milvus client and the pool."""
        self._stop.set()
        for thread in (self._thread, self._compact_thread):
            if thread is not None and thread is not threading.current_thread():
                thread.join(timeout=10)
        self._thread = self._compact_thread = None
        self.engine.close()
        super().close()
