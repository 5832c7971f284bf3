"""The SQL of a user's cluster edits, shared by both photo stores: merging two clusters, taking a face out of one
("not this person"), re-clustering's write, and the constraints the edits leave for re-clustering to respect.

* ``cannot_link (a, b)``: a face taken out of a cluster against every face it left (``a < b``).
* ``merged_faces (face_id, grp)``: the faces of two merged clusters share a group label; re-clustering keeps a
  group's unnamed faces in one cluster. Taking a face out of its cluster, or naming it, drops it from its group;
  deleting the face drops its row (foreign key ``ON DELETE CASCADE``). Labels come from the cluster-id counter.
"""

from __future__ import annotations

from collections.abc import Mapping

from service.photos.errors import ClusterConflict, ClusterNotFound, ObservationNotFound
from service.photos.sqlbase import SqlStoreBase
from service.sqlconn import SqlConn


class SqlClusterEdits(SqlStoreBase):
    """Cluster edits and their constraints (see the module)."""

    def new_cluster_ids(self, n: int) -> list[int]:
        with self.transaction() as c:
            return self._next_clusters(c, n)

    def replace_clusters(self, assignment: Mapping[int, int]) -> int:
        with self.transaction() as c:
            current = dict(c.execute("SELECT id, cluster_id FROM observations WHERE subject_id IS NULL").fetchall())
            changes = [(int(cid), int(i)) for i, cid in assignment.items() if int(i) in current]
            changes = [(cid, i) for cid, i in changes if current[i] != cid]
            if changes:
                c.executemany("UPDATE observations SET cluster_id = ? WHERE id = ?", changes)
                self._bump(c)
            top = c.execute("SELECT MAX(cluster_id) FROM observations").fetchone()[0] or 0
            c.execute("UPDATE counters SET value = ? WHERE name = 'cluster' AND value < ?", (top, top))
            return len(changes)

    @staticmethod
    def _members(c: SqlConn, cluster_id: int) -> list[int]:
        rows = c.execute("SELECT id FROM observations WHERE cluster_id = ? ORDER BY id", (cluster_id,)).fetchall()
        if not rows:
            raise ClusterNotFound(f"no cluster {cluster_id}")
        return [int(r[0]) for r in rows]

    def merge_clusters(self, into: int, other: int) -> int:
        with self.transaction() as c:
            keep, moved = self._members(c, into), self._members(c, other)
            members = "SELECT id FROM observations WHERE cluster_id = ?"
            c.execute(
                f"DELETE FROM cannot_link WHERE (a IN ({members}) AND b IN ({members}))"
                f" OR (a IN ({members}) AND b IN ({members}))",
                (into, other, other, into),
            )
            (group,) = self._next_clusters(c, 1)
            c.execute(
                "INSERT INTO merged_faces (face_id, grp) SELECT id, ? FROM observations WHERE cluster_id IN (?, ?)"
                " ON CONFLICT (face_id) DO UPDATE SET grp = excluded.grp",
                (group, into, other),
            )
            c.execute("UPDATE observations SET cluster_id = ? WHERE cluster_id = ?", (into, other))
            self._bump(c)
        return len(keep) + len(moved)

    def split_face(self, cluster_id: int, face_id: int) -> int:
        with self.transaction() as c:
            members = self._members(c, cluster_id)
            if face_id not in members:
                if c.execute("SELECT 1 FROM observations WHERE id = ?", (face_id,)).fetchone() is None:
                    raise ObservationNotFound(f"no face {face_id}")
                raise ClusterConflict(f"face {face_id} is not in cluster {cluster_id}")
            pairs = [(min(face_id, f), max(face_id, f)) for f in members if f != face_id]
            c.executemany("INSERT INTO cannot_link VALUES (?, ?) ON CONFLICT DO NOTHING", pairs)
            c.execute("DELETE FROM merged_faces WHERE face_id = ?", (face_id,))
            (new_id,) = self._next_clusters(c, 1)
            c.execute("UPDATE observations SET cluster_id = ? WHERE id = ?", (new_id, face_id))
            self._bump(c)
        return new_id

    def cannot_links(self) -> list[tuple[int, int]]:
        return [(int(a), int(b)) for a, b in self._read("SELECT a, b FROM cannot_link")]

    def merged_groups(self) -> list[list[int]]:
        """The face ids of each merge group with at least two faces (named faces left out)."""
        groups: dict[int, list[int]] = {}
        rows = self._read(
            "SELECT m.grp, m.face_id FROM merged_faces m JOIN observations o ON o.id = m.face_id"
            " WHERE o.subject_id IS NULL ORDER BY m.grp, m.face_id"
        )
        for grp, face in rows:
            groups.setdefault(int(grp), []).append(int(face))
        return [ids for ids in groups.values() if len(ids) > 1]
