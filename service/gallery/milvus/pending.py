"""The faces pending in the outbox (committed in PostgreSQL, not yet in Milvus), kept in memory per model so that
every search compares them exactly without reading them from PostgreSQL each time. With 40,000 faces pending (a
re-index switch, the first start on a gallery served by pgvector until then) a search that read and decoded them
all took ~0.5 s; with this copy the pending part costs well under a millisecond (docs/MILVUS.md, Figures).

How the copy stays exact, whatever other replicas write (:mod:`.outbox`, version 2):

- Every outbox row keeps ``txid``, the transaction that wrote it. A refresh reads, in one statement (one
  snapshot), the rows of this model written by transactions at or above the copy's *horizon*, each with the face's
  embedding as of that snapshot (none when the face is gone or now of another model), and the snapshot's own
  horizon, ``pg_snapshot_xmin``: every transaction below it had ended, so its rows (if it committed) were in this
  snapshot or an earlier one. Rows of transactions still running come again in the next refresh.
- A face's newest row decides (a later row comes from a later change of the face: re-embedded, erased, moved to
  another model). Rows older than the outbox's oldest were drained and are dropped; the whole copy once the model
  has no rows left. Refreshes of a copy run one at a time, so they apply in snapshot order (one with an older
  snapshot could otherwise drop a row that a newer one loaded: a transaction that took its ``seq`` early and
  committed late). A search that waits more than :data:`LOCK_WAIT_S` for that compares in PostgreSQL instead.
- The copy may hold more than the outbox: faces drained since (live faces that Milvus has too) and faces erased
  since (the candidate check against PostgreSQL drops them, and the search asks for more). Neither changes an
  answer; missing a pending face would, so the write timestamp is read after the pending faces (same round trip):
  a face no longer pending then had been drained, and Milvus has it at that timestamp.
- A model with no pending rows costs one indexed ``EXISTS`` in the search's first round trip and no lock.
- Above :data:`CACHE_MAX` pending faces of one model (memory: ~0.5 KiB per 128-d face) the copy is dropped and
  the pending faces are compared in PostgreSQL by pgvector, exactly, per probe (~30 ms per 40,000 faces here)
  until the backlog is back below half of it.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import psycopg

from service.gallery.milvus import outbox
from service.gallery.milvus.options import MAX_K

CACHE_MAX = 200_000
"""Pending faces of one model kept in memory at most (~100 MiB at 128-d)."""

_DELTA = (
    "SELECT h.horizon, o.seq, o.face_id, vector_send(f.embedding) "
    "FROM (SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint AS horizon) h "
    "LEFT JOIN vector_outbox o ON o.model_id = %(m)s AND o.txid >= %(w)s "
    "LEFT JOIN faces f ON f.id = o.face_id AND f.model_id = %(m)s "
    "LIMIT %(limit)s"
)
"""Outbox rows of model ``m`` written by transactions from horizon ``w`` on, with the face's embedding now; at least
one row (the snapshot's horizon) even when there are none."""

_STATE = (
    "SELECT substr(c.name, 7), sum(c.n), s.ts, s.lo, s.pending, s.backlog "
    "FROM (SELECT (SELECT write_ts FROM vector_sync WHERE model_id = %(m)s) AS ts, "
    "(SELECT min(seq) FROM vector_outbox) AS lo, "
    "EXISTS (SELECT 1 FROM vector_outbox WHERE model_id = %(m)s) AS pending, "
    "CASE WHEN %(count)s THEN (SELECT count(*) FROM (SELECT 1 FROM vector_outbox WHERE model_id = %(m)s "
    "LIMIT %(limit)s) x) END AS backlog) s "
    "LEFT JOIN counts c ON c.name LIKE 'model:%%' GROUP BY c.name, s.ts, s.lo, s.pending, s.backlog"
)
"""Faces per model (trigger-kept ``counts``), the model's newest Milvus write timestamp, the outbox's oldest row,
whether the model has rows pending and, while its copy is off, how many (counted up to ``limit``)."""

_EXACT = (
    "SELECT f.id FROM vector_outbox o JOIN faces f ON f.id = o.face_id "
    "WHERE o.model_id = %(m)s AND f.model_id = %(m)s ORDER BY f.embedding <-> %(q)s, f.id LIMIT %(n)s"
)
"""The ``n`` pending faces nearest probe ``q``, in PostgreSQL (above :data:`CACHE_MAX`)."""


@dataclass(frozen=True)
class PendingView:
    """The pending faces one search compares: a snapshot of the in-memory copy, or (``in_db``) PostgreSQL's."""

    fids: npt.NDArray[np.int64] = field(default_factory=lambda: np.zeros(0, np.int64))
    embs: npt.NDArray[np.float32] = field(default_factory=lambda: np.zeros((0, 0), np.float32))
    live: npt.NDArray[np.bool_] = field(default_factory=lambda: np.zeros(0, np.bool_))
    in_db: bool = False

    def nearest(
        self, conn: psycopg.Connection[Any], model_id: str, q: npt.NDArray[np.float32], n: int
    ) -> tuple[list[list[int]], int]:
        """Per probe, up to ``n`` pending face ids nearest first; and the model's write timestamp when they were
        read in PostgreSQL now (0 otherwise: the caller's is newer than the copy's snapshot)."""
        n = min(n, MAX_K)
        if self.in_db:
            out = [[int(r[0]) for r in conn.execute(_EXACT, {"m": model_id, "q": p, "n": n})] for p in q]
            return out, outbox.write_ts(conn, model_id)  # after the pending faces: see the module
        if not self.live.any() or self.embs.shape[1] != q.shape[1]:
            return [[] for _ in range(len(q))], 0
        sims = self.embs @ q.T  # unit vectors: nearest = most similar
        sims[~self.live] = -np.inf
        m = min(n, int(self.live.sum()))
        out = []
        for j in range(len(q)):
            top = np.argpartition(-sims[:, j], m - 1)[:m] if m < len(sims) else np.arange(len(sims))
            top = top[np.lexsort((self.fids[top], -sims[top, j]))]
            out.append([int(self.fids[i]) for i in top if self.live[i]])
        return out, 0


class _Copy:
    """One model's pending faces: rows appended, a face's older row masked, compacted when half is masked."""

    def __init__(self) -> None:
        self.horizon = 0
        self.n = 0
        self.seq = np.zeros(0, np.int64)
        self.fid = np.zeros(0, np.int64)
        self.emb = np.zeros((0, 0), np.float32)
        self.live = np.zeros(0, np.bool_)
        self.newest: dict[int, int] = {}  # face id -> its row

    def merge(self, rows: list[tuple[int, int, npt.NDArray[np.float32] | None]], horizon: int) -> None:
        for seq, fid, vec in rows:
            i = self.newest.get(fid)
            if i is not None and self.seq[i] >= seq:
                continue  # a newer row of this face is here already
            if i is not None:
                self.live[i] = False
            self._append(seq, fid, vec)
        self.horizon = max(self.horizon, horizon)

    def _append(self, seq: int, fid: int, vec: npt.NDArray[np.float32] | None) -> None:
        if vec is not None and self.emb.shape[1] != len(vec):
            if self.n and self.emb.shape[1]:
                raise ValueError(f"pending embeddings of {self.emb.shape[1]} and {len(vec)} dimensions")
            self.emb = np.zeros((len(self.seq), len(vec)), np.float32)
        if self.n == len(self.seq):
            self._resize(max(1024, 2 * self.n))
        i = self.n
        self.seq[i], self.fid[i], self.live[i] = seq, fid, vec is not None
        if vec is not None:
            self.emb[i] = vec
        self.newest[fid] = i
        self.n += 1

    def _resize(self, size: int, keep: npt.NDArray[np.intp] | None = None) -> None:
        rows = np.arange(self.n) if keep is None else keep
        seq, fid, live = np.zeros(size, np.int64), np.zeros(size, np.int64), np.zeros(size, np.bool_)
        emb = np.zeros((size, self.emb.shape[1]), np.float32)  # new arrays: views already handed out stay valid
        seq[: len(rows)], fid[: len(rows)], live[: len(rows)] = self.seq[rows], self.fid[rows], self.live[rows]
        emb[: len(rows)] = self.emb[rows]
        self.seq, self.fid, self.emb, self.live, self.n = seq, fid, emb, live, len(rows)
        if keep is not None:
            self.newest = {int(f): i for i, f in enumerate(fid[: self.n])}

    def drop_drained(self, lo: int) -> None:
        """Rows older than the outbox's oldest were drained; compact when half the rows are masked."""
        self.live[: self.n] &= self.seq[: self.n] >= lo
        live = int(self.live[: self.n].sum())
        if self.n > 1024 and live < self.n // 2:
            self._resize(max(1024, 2 * live), np.flatnonzero(self.live[: self.n]))

    def view(self) -> PendingView:
        n = self.n
        return PendingView(self.fid[:n], self.emb[:n], self.live[:n].copy())


@dataclass
class SearchState:
    """What a search needs before asking Milvus: faces per model, the guarantee timestamp, the pending faces."""

    faces_by_model: dict[str, int]
    write_ts: int
    pending: PendingView


@dataclass
class _State:
    by_model: dict[str, int]
    ts: int
    lo: int | None
    pending: bool
    backlog: int | None


def _read_state(rows: list[Any]) -> _State:
    by_model = {str(m): int(n) for m, n, *_ in rows if m is not None and int(n) > 0}
    _, _, ts, lo, pending, backlog = rows[0]
    return _State(by_model, int(ts or 0), None if lo is None else int(lo), bool(pending), backlog)


LOCK_WAIT_S = 2.0
"""Longest a search waits for another's refresh of the copy before it compares the pending faces in PostgreSQL."""


class PendingFaces:
    """The in-memory copies of one gallery's pending faces, one per model; thread-safe."""

    def __init__(self, cap: int = CACHE_MAX) -> None:
        self.cap = cap
        self._lock = threading.Lock()
        self._copies: dict[str, _Copy] = {}
        self._in_db: set[str] = set()  # models whose backlog is above the cap

    def size(self, model_id: str) -> int:
        """Rows held for ``model_id`` (tests, reports)."""
        with self._lock:
            c = self._copies.get(model_id)
            return 0 if c is None else c.n

    def state(self, conn: psycopg.Connection[Any], model_id: str) -> SearchState:
        """Read the search's state and refresh ``model_id``'s copy: one round trip while the model has no faces
        pending, two (the second one pipelined) when a backlog appears, then one per search until it is gone."""
        with self._lock:
            known = model_id in self._copies or model_id in self._in_db
        if not known:
            st = self._state(conn, model_id, count=False)
            if not st.pending:
                return SearchState(st.by_model, st.ts, PendingView())
        if not self._lock.acquire(timeout=LOCK_WAIT_S):
            st = self._state(conn, model_id, count=False)
            return SearchState(st.by_model, st.ts, PendingView(in_db=st.pending))
        try:
            return self._refresh(conn, model_id)
        finally:
            self._lock.release()

    def _state(self, conn: psycopg.Connection[Any], model_id: str, *, count: bool) -> _State:
        return _read_state(conn.execute(_STATE, {"m": model_id, "count": count, "limit": self.cap + 1}).fetchall())

    def _refresh(self, conn: psycopg.Connection[Any], model_id: str) -> SearchState:
        """Under the lock: the rows since the copy's horizon, then the state (a later snapshot), pipelined."""
        in_db = model_id in self._in_db
        copy = self._copies.get(model_id)
        params = {"m": model_id, "w": copy.horizon if copy else 0, "limit": self.cap + 1, "count": in_db}
        with conn.pipeline():
            delta = None if in_db else conn.cursor(binary=True).execute(_DELTA, params)
            state = conn.execute(_STATE, params)
        rows = delta.fetchall() if delta is not None else []
        st = _read_state(state.fetchall())
        done = SearchState(st.by_model, st.ts, PendingView(in_db=True))
        if not st.pending or st.lo is None:  # nothing left: every face is in Milvus at this timestamp
            self._copies.pop(model_id, None)
            self._in_db.discard(model_id)
            done.pending = PendingView()
        elif in_db:
            if st.backlog is not None and int(st.backlog) <= self.cap // 2:
                self._in_db.discard(model_id)  # the next search loads the copy afresh
        elif len(rows) > self.cap:
            self._copies.pop(model_id, None)
            self._in_db.add(model_id)
        else:
            copy = self._copies.setdefault(model_id, _Copy())
            copy.merge(_decode(rows), int(rows[0][0]))
            copy.drop_drained(st.lo)
            if int(copy.live[: copy.n].sum()) > self.cap:
                self._copies.pop(model_id, None)
                self._in_db.add(model_id)
            else:
                done.pending = copy.view()
        return done


def _decode(rows: list[Any]) -> list[tuple[int, int, npt.NDArray[np.float32] | None]]:
    """``(seq, face id, embedding or None)`` from :data:`_DELTA`'s rows (pgvector's binary form: 2-byte dimension,
    2 unused bytes, big-endian float4s), all the embeddings of one model decoded at once."""
    got = [(int(r[1]), int(r[2]), r[3]) for r in rows if r[1] is not None]
    blobs = [b for _, _, b in got if b is not None]
    if not blobs:
        return [(s, f, None) for s, f, _ in got]
    width = len(blobs[0])
    if any(len(b) != width for b in blobs):
        raise ValueError("pending embeddings of different dimensions in one model")
    raw = np.frombuffer(b"".join(blobs), np.uint8).reshape(len(blobs), width)[:, 4:]
    vecs = iter(np.ascontiguousarray(raw).view(">f4").astype(np.float32))
    return [(s, f, next(vecs) if b is not None else None) for s, f, b in got]
