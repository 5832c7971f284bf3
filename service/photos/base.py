"""The storage interface of the photo library: every caller (``service.photos.library``) is typed against
:class:`PhotoStore`. Implementations: embedded SQLite in the data dir (:mod:`service.photos.sqlite`) and
PostgreSQL (:mod:`service.pgstores.photos`), sharing their SQL (:mod:`service.photos.sqlstore`).

Every method is atomic (one transaction) and thread-safe; a write is durable when it returns. Observation ids
are integers, increasing and never reused; cluster ids likewise.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Protocol

import numpy as np
import numpy.typing as npt

from service.photos.types import ClusterSummary, Naming, NewObservation, Observation, Photo


class PhotoStore(Protocol):
    """Photos, their face observations, clusters of unnamed faces and cannot-link constraints."""

    # ---------------------------------------------------------------- photos
    def add_photo(
        self, *, sha256: str, external_id: str | None, faces: Sequence[NewObservation]
    ) -> tuple[Photo, list[Observation], bool]:
        """Store a photo and its faces; a photo with this sha256 already stored is returned as it is with
        ``created=False`` (third item) and nothing is written. Faces without a cluster and subject get a new
        cluster each."""
        ...

    def add_photos(
        self, photos: Sequence[tuple[str, str | None, Sequence[NewObservation]]]
    ) -> list[tuple[Photo, list[Observation], bool]]:
        """:meth:`add_photo` for each ``(sha256, external_id, faces)``, all in one transaction (a batch of the
        indexing pipeline). Faces of the batch with the same negative ``cluster_id`` share one new cluster."""
        ...

    def find_photo(self, sha256: str) -> Photo | None: ...

    def get_photo(self, photo_id: str) -> Photo:
        """The photo, or :class:`PhotoNotFound`."""
        ...

    def photo_faces(self, photo_id: str) -> list[Observation]: ...

    def delete_photo(self, photo_id: str) -> list[Observation]:
        """Erase the photo and its faces (and their constraints); returns the faces erased."""
        ...

    def known_sha256s(self) -> set[str]: ...

    # ---------------------------------------------------------------- faces
    def get_faces(self, ids: Sequence[int]) -> list[Observation]:
        """The observations with these ids that exist, in the order given."""
        ...

    def embeddings_of(self, ids: Sequence[int]) -> npt.NDArray[np.float32]:
        """(n, 128) embeddings of existing observations, in the order given (missing ones are skipped)."""
        ...

    def all_embeddings(
        self, model_id: str, *, unnamed_only: bool = False, after: int = 0
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
        """Ids and embeddings of every observation of ``model_id`` with an id above ``after`` (optionally only
        unnamed ones), in id order."""
        ...

    def observation_count(self, model_id: str) -> int:
        """Observations of ``model_id``, named or not."""
        ...

    def crop_png(self, face_id: int) -> bytes | None: ...

    def photos_of_subject(
        self, subject_id: str, *, limit: int, after: tuple[float, str] | None = None
    ) -> list[tuple[Photo, list[Observation]]]:
        """Photos holding faces named ``subject_id``, newest first (by ``created_at``, then id), each with those
        faces; ``after``: the ``(created_at, id)`` of the last photo of the previous page (a keyset, so photos
        erased or indexed between two pages neither skip nor repeat any)."""
        ...

    def set_subject(self, ids: Sequence[int], subject_id: str, face_ids: Mapping[int, int]) -> None:
        """Name observations (they leave their clusters); ``face_ids``: observation -> gallery face enrolled."""
        ...

    def unname_subject(self, subject_id: str) -> list[int]:
        """Its observations become unnamed, together in one new cluster; returns their ids."""
        ...

    def subject_faces(self, subject_id: str) -> list[Observation]:
        """Every observation named ``subject_id``, in id order."""
        ...

    def delete_subject_faces(self, subject_id: str) -> list[Observation]:
        """Erase every observation named ``subject_id``; returns those erased."""
        ...

    def delete_unnamed_before(self, created_before: float) -> list[Observation]:
        """Erase unnamed observations created before this time (retention); returns those erased."""
        ...

    # ---------------------------------------------------------------- clusters
    def list_clusters(
        self, *, limit: int, sample: int, after: tuple[int, int] | None = None, min_size: int = 1
    ) -> tuple[list[ClusterSummary], int]:
        """A page of the clusters of at least ``min_size`` faces, largest first (then oldest id), with ``sample``
        face ids each, and how many such clusters there are. ``after``: the ``(size, id)`` of the previous page's
        last cluster (a keyset: clusters named, merged or emptied meanwhile make the next page skip none)."""
        ...

    def cluster_faces(self, cluster_id: int) -> list[Observation]:
        """Its faces, best quality first; :class:`ClusterNotFound` if it has none."""
        ...

    def cluster_of(self, ids: Sequence[int]) -> dict[int, int]:
        """Observation id -> cluster id, for those of ``ids`` that are unnamed and clustered."""
        ...

    def new_cluster_ids(self, n: int) -> list[int]: ...

    def replace_clusters(self, assignment: Mapping[int, int]) -> int:
        """Re-clustering: set the cluster of each unnamed observation given; returns the rows changed."""
        ...

    def merge_clusters(self, into: int, other: int) -> int:
        """In one transaction: every face of ``other`` moves into ``into``, the constraints between the two
        clusters' faces are dropped and all their faces join one merge group (:meth:`merged_groups`); returns the
        merged size. :class:`ClusterNotFound` when either has no faces
        (by then: a concurrent merge may have emptied it)."""
        ...

    def split_face(self, cluster_id: int, face_id: int) -> int:
        """In one transaction: the face leaves ``cluster_id`` (and its merge group) for a new cluster of its own,
        with cannot-link constraints to every face it leaves; returns the new cluster id. :class:`ClusterNotFound`
        when the cluster is empty, :class:`ObservationNotFound` when there is no such face, :class:`ClusterConflict`
        when the face is in another cluster (by then)."""
        ...

    def cannot_links(self) -> list[tuple[int, int]]:
        """Pairs of face ids ``(a, b)``, ``a < b``, that a user separated: never in one cluster."""
        ...

    def merged_groups(self) -> list[list[int]]:
        """Face ids of each group of unnamed faces a user merged (two or more): re-clustering keeps each in one
        cluster."""
        ...

    def unnamed_count(self, model_id: str) -> int:
        """Unnamed observations of ``model_id``."""
        ...

    def model_ids(self) -> list[str]:
        """The model ids of the stored faces."""
        ...

    def maintenance_turn(self) -> AbstractContextManager[bool]:
        """Whether this process runs the library's background maintenance now: True for one process at a time
        among those sharing the store (always, embedded), held for the block."""
        ...

    def naming_lock(self) -> AbstractContextManager[None]:
        """Held for a whole cluster naming and for the roll-forward of interrupted ones: one at a time among the
        processes sharing the store (embedded: one process, nothing to hold), so none completes an intent
        another is still carrying out. Released if its holder dies."""
        ...

    # ---------------------------------------------------------------- naming intents (cluster -> gallery)
    def begin_naming(
        self, *, cluster_id: int, faces: Sequence[int], enrol: Sequence[int], subject_id: str | None, name: str | None
    ) -> Naming:
        """Record the intent of a naming before the gallery is written (see :class:`Naming`)."""
        ...

    def pending_namings(self) -> list[Naming]:
        """Intents not ended yet, oldest first (a crash or a failure left them half done)."""
        ...

    def end_naming(self, naming_id: int) -> None:
        """Drop an intent (done, or rolled back); unknown ids are ignored."""
        ...

    def change_count(self) -> int:
        """A counter that grows with every write that can change the clusters."""
        ...

    def close(self) -> None: ...
