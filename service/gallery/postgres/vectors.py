"""Vector search in PostgreSQL with pgvector: one partial HNSW index per model id, exact scans while a model is
small (the grouping into subjects is :mod:`service.gallery.grouping`'s).

Conventions: embeddings are float32 (128,) unit vectors; pgvector's ``<->`` is the L2 distance, in [0, 2];
similarity is ``1 - d**2 / 2``.

Index per model: ``CREATE INDEX faces_hnsw_<hash> ON faces USING hnsw (embedding vector_l2_ops) WHERE model_id =
'<model>'``, made (empty, then maintained by PostgreSQL on every insert) the first time a model gets faces or staged
embeddings. The model id is written into the SQL as a quoted literal, never a bind parameter: a generic plan of a
prepared statement cannot prove a partial index's predicate and would scan the table.

Exact search: while a model has at most ``exact_below`` faces the query orders by ``(embedding <-> probe) + 0``,
an expression no index matches, so PostgreSQL computes every distance of that model's faces (found through the
``faces_model`` b-tree) and sorts them. Above, the HNSW index answers with ``hnsw.ef_search`` candidates
(raised for the query when more are fetched).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import psycopg
from psycopg import sql

from service.gallery.grouping import FaceHit


@dataclass(frozen=True, slots=True)
class HnswBuild:
    """How HNSW indexes made from now on are built (existing indexes keep theirs)."""

    m: int = 16
    """Graph degree: neighbours per node per layer (``m``)."""
    ef_construction: int = 64
    """Candidate list while inserting (``ef_construction``)."""


@dataclass(frozen=True, slots=True)
class VectorOptions:
    """pgvector index and search settings (measured in docs/POSTGRES.md)."""

    ef_search: int = 100
    """HNSW candidate list at search time (``hnsw.ef_search``); raised per query to the faces fetched."""
    build: HnswBuild = HnswBuild()
    exact_below: int = 5_000
    """A model with at most this many faces is searched exactly (no HNSW)."""
    overfetch: int = 8
    """Faces fetched per wanted subject before grouping (grown x4 until ``top_k`` subjects are found)."""


def index_name(model_id: str) -> str:
    """The partial HNSW index of ``model_id``: ``faces_hnsw_<16 hex of sha1>`` (model ids may be long)."""
    return "faces_hnsw_" + hashlib.sha1(model_id.encode()).hexdigest()[:16]


def ensure_index(conn: psycopg.Connection[Any], model_id: str, opts: VectorOptions) -> bool:
    """Create the HNSW index of ``model_id`` unless it exists, in its own short transaction; returns True when it
    was created now. Replicas creating it at once are serialised by a SHARE ROW EXCLUSIVE lock on ``faces`` (it
    also makes the re-check see an index committed meanwhile: taking a table lock refreshes the catalog caches,
    an advisory lock does not). The lock blocks writes to ``faces`` only while the index is built: once per
    model, and at once for a new model's empty index."""
    name = index_name(model_id)
    row = conn.execute("SELECT to_regclass(%s)", (name,)).fetchone()
    if row is not None and row[0] is not None:
        return False
    with conn.transaction():
        conn.execute("LOCK TABLE faces IN SHARE ROW EXCLUSIVE MODE")
        row = conn.execute("SELECT to_regclass(%s)", (name,)).fetchone()
        if row is not None and row[0] is not None:
            return False
        conn.execute(
            sql.SQL(
                "CREATE INDEX {} ON faces USING hnsw (embedding vector_l2_ops) "
                "WITH (m = {}, ef_construction = {}) WHERE model_id = {}"
            ).format(
                sql.Identifier(name),
                sql.Literal(int(opts.build.m)),
                sql.Literal(int(opts.build.ef_construction)),
                sql.Literal(model_id),
            )
        )
    return True


def models_with_faces(conn: psycopg.Connection[Any]) -> dict[str, int]:
    """Faces per model id, for models that have any (from the trigger-kept ``counts``, summed over its shards:
    no scan of ``faces``)."""
    rows = conn.execute(
        "SELECT substr(name, 7), sum(n) FROM counts WHERE name LIKE 'model:%' GROUP BY name HAVING sum(n) > 0"
    ).fetchall()
    return {str(m): int(n) for m, n in rows}


def _query(model_id: str, exact: bool) -> sql.Composed:
    order = sql.SQL("(f.embedding <-> p.v) + 0") if exact else sql.SQL("f.embedding <-> p.v")
    return sql.SQL(
        "SELECT p.i, f.id, s.id, s.name, f.d "
        "FROM unnest(%(probes)s::vector[]) WITH ORDINALITY AS p(v, i) "
        "CROSS JOIN LATERAL ("
        "  SELECT f.id, f.subject_pk, f.embedding <-> p.v AS d FROM faces f "
        "  WHERE f.model_id = {model} ORDER BY {order} LIMIT %(k)s"
        ") f JOIN subjects s ON s.pk = f.subject_pk "
        "ORDER BY p.i, f.d, f.id"
    ).format(model=sql.Literal(model_id), order=order)


def nearest_faces(
    conn: psycopg.Connection[Any],
    probes: npt.NDArray[np.float32],
    model_id: str,
    k: int,
    *,
    exact: bool,
    opts: VectorOptions,
) -> list[list[FaceHit]]:
    """Per probe, up to ``k`` faces ``(face id, subject id, subject name, L2 distance)`` nearest first."""
    params = {"probes": [np.asarray(v, np.float32) for v in probes], "k": int(k)}
    query = _query(model_id, exact)
    if exact or k <= opts.ef_search:
        rows = conn.execute(query, params).fetchall()
    else:
        with conn.transaction():
            conn.execute(sql.SQL("SET LOCAL hnsw.ef_search = {}").format(sql.Literal(int(min(k, 1000)))))
            rows = conn.execute(query, params).fetchall()
    out: list[list[FaceHit]] = [[] for _ in range(len(probes))]
    for i, fid, sid, name, d in rows:
        out[int(i) - 1].append((int(fid), str(sid), str(name), float(d)))
    return out
