"""The photo library: index photos' faces, find similar faces, the photos a person is in, privacy erasure.

:class:`PhotoLibrary` holds the :class:`~service.photos.base.PhotoStore` (the durable truth) and the search
index over every observation (:class:`~service.photos.index.PhotoIndex`: a cache of the store, snapshotted, and
brought up to date whenever the store's change counter moved, so that replicas sharing one database search what
any of them indexed).
Naming an observation uses the enrolled gallery through ``recognition.identify``; enrolling a named cluster
goes through the :class:`~service.gallery.base.Gallery` protocol (``service.photos.clusters``).

Distances are L2 between unit embeddings in [0, 2]; ``similarity = 1 - d**2 / 2``. Thread-safe: index
changes and cluster assignment of new faces take one lock; searches share the index's readers-writer lock.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from embeddings import FaceAnalyzer, QualityThresholds
from embeddings.distance import distance_to_similarity
from service import recognition
from service.gallery import FaceNotFound, SubjectNotFound
from service.gallery.calibration import load_calibration
from service.gallery.crops import encode_crop
from service.gallery.segment import IndexParams
from service.photos.base import PhotoStore
from service.photos.cluster import ClusterParams, linking_threshold, vote
from service.photos.errors import ObservationNotFound
from service.photos.index import PhotoIndex, group_by_model
from service.photos.types import NewObservation, Observation, Photo

log = logging.getLogger("facerec.photos")

JOIN_NEIGHBOURS = 10
"""Nearest indexed faces a new unnamed face looks at to pick its cluster."""
PHOTO_PNG_LEVEL = 1
"""zlib level of photo faces' stored crops: ~2.5 ms a crop instead of ~11 ms at the gallery's 6, ~4% larger."""


@dataclass
class IndexedPhoto:
    """The result of indexing one photo; ``created`` False: this sha256 was indexed before (nothing changed)."""

    photo: Photo
    faces: list[Observation]
    created: bool
    join_ms: float = 0.0
    """Time spent choosing clusters and updating the search index for the new faces, milliseconds."""


@dataclass(frozen=True, slots=True)
class IndexOptions:
    """How faces are indexed: keep their aligned crops (``FACEREC_STORE_CROPS``), and identify's fixed threshold
    and max FIR (``FACEREC_MATCH_THRESHOLD``, ``FACEREC_MAX_FIR``; None: the analyzer's / off)."""

    store_crop: bool = True
    fixed_threshold: float | None = None
    max_fir: float | None = None

    @classmethod
    def of(cls, settings: Any) -> IndexOptions:
        """From the service's :class:`~service.config.Settings`."""
        return cls(settings.store_crops, settings.match_threshold, settings.max_fir)


@dataclass
class SimilarFace:
    face: Observation
    distance: float
    similarity: float


class PhotoLibrary:
    """Photos, their faces and clusters of unnamed faces, over one :class:`PhotoStore`."""

    def __init__(
        self,
        store: PhotoStore,
        *,
        cluster_params: ClusterParams | None = None,
        retention_days: float = 0.0,
        index_params: IndexParams | None = None,
        link_max_fir: float | None = None,
        index_dir: Path | None = None,
        enrol_gate: QualityThresholds | None = None,
    ) -> None:
        self.store = store
        self.cluster_params = cluster_params or ClusterParams()
        """``threshold``: the linking distance, or its cap when ``link_max_fir`` is set."""
        self.link_max_fir = link_max_fir
        self._unnamed: dict[str, int] = {}
        """Unnamed faces per model id for the joining threshold: read from the store once, counted up as faces
        join, re-read by every re-clustering (erasures in between leave it a little high: a slightly tighter link)."""
        self.retention_days = retention_days
        self.index = PhotoIndex(store, index_params or IndexParams(), index_dir)
        """The search index (:mod:`service.photos.index`); ``index_dir`` None: not persisted."""
        self.write_lock = threading.Lock()
        """Serialises cluster assignment + store write + index add of new faces, and cluster changes."""
        self.enrol_gate = enrol_gate or QualityThresholds()
        """The enrolment quality gate faces of a named cluster must pass to become templates."""
        self.namings_repaired = False
        """Set once :func:`service.photos.naming.repair_namings` ran in this process (the first request does it)."""
        self.maintenance: Any = None
        """The background task (``service.photos.service.Maintenance``), stopped by ``close_library``."""

    def set_unnamed_count(self, model_id: str, n: int) -> None:
        self._unnamed[model_id] = n

    def link_threshold(self, n_faces: int, *, model_id: str) -> float:
        """The L2 distance linking two faces of ``model_id`` among ``n_faces`` unnamed ones
        (:func:`linking_threshold` with the model's calibration tables), or the fixed ``cluster_params.threshold``
        without ``link_max_fir`` or tables."""
        cap = self.cluster_params.threshold
        if not self.link_max_fir:
            return cap
        return linking_threshold(n_faces, calibration=load_calibration(model_id), max_fir=self.link_max_fir, cap=cap)

    # ------------------------------------------------------------------ the search index
    def nearest(
        self, probes: npt.NDArray[np.float32], *, model_id: str, k: int
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
        """``k`` nearest indexed faces per probe row: L2 distances ascending and observation ids (-1 = none)."""
        return self.index.search(probes, model_id=model_id, k=k)

    def _erase_from_index(self, faces: Sequence[Observation]) -> None:
        self.index.erase(group_by_model([(f.model_id, f.id) for f in faces]))

    # ------------------------------------------------------------------ indexing
    def index_photo(
        self,
        *,
        analyzer: FaceAnalyzer,
        gallery: Any,
        image: bytes,
        external_id: str | None = None,
        options: IndexOptions = IndexOptions(),
    ) -> IndexedPhoto:
        """Every face of the photo stored as an observation, named when identify matches an enrolled subject,
        otherwise put in the cluster most of its near unnamed neighbours are in (or a new one). The same bytes
        again (same sha256) return the stored photo unchanged."""
        digest = recognition.sha256_bytes(image)
        known = self.store.find_photo(digest)
        if known is not None:
            return IndexedPhoto(known, self.store.photo_faces(known.id), created=False)
        result = recognition.identify(
            analyzer=analyzer,
            gallery=gallery,
            image=image,
            threshold=None,
            top_k=1,
            fixed_threshold=options.fixed_threshold,
            max_fir=options.max_fir,
        )
        faces: list[NewObservation] = []
        for item in result.faces:
            box, quality = recognition.face_summary(item.face)
            quality["reasons"] = list(item.face.quality.reasons)
            png = encode_crop(item.face.crop, compress_level=PHOTO_PNG_LEVEL) if options.store_crop else None
            faces.append(
                NewObservation(
                    embedding=item.face.embedding,
                    model_id=result.model_id,
                    box=box,
                    quality=quality,
                    crop_png=png,
                    subject_id=item.match.subject_id if item.match else None,
                    distance=item.match.distance if item.match else None,
                )
            )
        return self.add_identified([(digest, external_id, faces)], gallery=gallery)[0]

    def add_identified(
        self, photos: Sequence[tuple[str, str | None, list[NewObservation]]], *, gallery: Any
    ) -> list[IndexedPhoto]:
        """:meth:`add_photos` of faces that identify named, then the names of subjects erased meanwhile dropped.

        A subject erased (on any replica) between identify and this write would otherwise keep a face named after
        it: the erasure unnames or erases the faces named at its time, and this write may come after. So, after
        the write, each subject named is looked up: one that is gone gets :meth:`forget_subject` (its faces
        become unnamed, as if indexed after the erasure). Either the erasure comes after the write (and deals
        with the new faces) or the look-up sees it gone."""
        results = self.add_photos(photos)
        named = {f.subject_id for r in results if r.created for f in r.faces if f.subject_id is not None}
        gone = {s for s in named if not _subject_exists(gallery, s)}
        for subject_id in sorted(gone):
            log.info("photo library: subject %s was erased while indexing: its faces are unnamed", subject_id)
            self.forget_subject(subject_id)
        if not gone:
            return results
        return [
            dataclasses.replace(r, faces=self.store.photo_faces(r.photo.id))
            if any(f.subject_id in gone for f in r.faces)
            else r
            for r in results
        ]

    def add_faces(self, *, sha256: str, external_id: str | None, faces: list[NewObservation]) -> IndexedPhoto:
        """Store one photo's analysed faces (:meth:`add_photos` of one)."""
        return self.add_photos([(sha256, external_id, faces)])[0]

    def add_photos(self, photos: Sequence[tuple[str, str | None, list[NewObservation]]]) -> list[IndexedPhoto]:
        """Store analysed photos ``(sha256, external_id, faces)`` in one store transaction, under the write lock:
        each unnamed face joins a cluster (:func:`~service.photos.cluster.vote` over its nearest unnamed faces,
        among those indexed and those of the batch's earlier photos) or starts one, then the faces are added to
        the search index. ``join_ms`` of each result: the batch's time divided among its photos."""
        with self.write_lock:
            start = time.perf_counter()
            assigned = self._assign_clusters([faces for _, _, faces in photos])
            rows = self.store.add_photos(
                [(sha, ext, faces) for (sha, ext, _), faces in zip(photos, assigned, strict=True)]
            )
            for (_, stored, created), faces in zip(rows, assigned, strict=True):
                if created and stored:
                    emb = np.stack([f.embedding for f in faces]).astype(np.float32)
                    self.index.add(stored[0].model_id, np.array([o.id for o in stored], np.int64), emb)
            join_ms = (time.perf_counter() - start) * 1000.0 / max(len(photos), 1)
        return [IndexedPhoto(photo, stored, created=created, join_ms=join_ms) for photo, stored, created in rows]

    def _assign_clusters(self, photos: list[list[NewObservation]]) -> list[list[NewObservation]]:
        """The faces of each photo with the cluster each unnamed one joins: an existing id, or a provisional
        negative one (a new cluster, which later faces of the batch may join)."""
        unnamed = [(p, i) for p, faces in enumerate(photos) for i, f in enumerate(faces) if f.subject_id is None]
        out = [list(faces) for faces in photos]
        if not unnamed:
            return out
        model_id = photos[unnamed[0][0]][unnamed[0][1]].model_id
        probes = np.stack([photos[p][i].embedding for p, i in unnamed]).astype(np.float32)
        dists, ids = self.nearest(probes, model_id=model_id, k=JOIN_NEIGHBOURS)
        if model_id not in self._unnamed:
            self._unnamed[model_id] = self.store.unnamed_count(model_id)
        clusters = self.store.cluster_of(sorted({int(i) for i in ids.reshape(-1) if i >= 0}))
        earlier: list[int] = []  # rows of ``probes`` of the batch's earlier photos
        chosen: list[int] = []
        threshold = 0.0
        for row, (p, i) in enumerate(unnamed):
            if not row or unnamed[row - 1][0] != p:  # a new photo: its faces count, as if indexed alone
                earlier = list(range(row))
                self._unnamed[model_id] += sum(q == p for q, _ in unnamed[row:])
                threshold = self.link_threshold(self._unnamed[model_id], model_id=model_id)
            pairs = [(clusters[int(j)], float(d)) for j, d in zip(ids[row], dists[row], strict=True) if j in clusters]
            if earlier:
                near = np.linalg.norm(probes[earlier] - probes[row], axis=1)
                pairs += [(chosen[r], float(d)) for r, d in zip(earlier, near, strict=True)]
                pairs = sorted(pairs, key=lambda cd: cd[1])[:JOIN_NEIGHBOURS]
            cid = vote([c for c, _ in pairs], [d for _, d in pairs], threshold)
            chosen.append(cid if cid is not None else -(row + 1))
            out[p][i] = dataclasses.replace(photos[p][i], cluster_id=chosen[-1])
        return out

    # ------------------------------------------------------------------ search
    def search(
        self, probe: npt.NDArray[np.float32], *, model_id: str, top_k: int, threshold: float | None
    ) -> list[SimilarFace]:
        """The ``top_k`` indexed faces nearest to ``probe`` (128,), nearest first; ``threshold``: only those at
        L2 distance <= it."""
        dists, ids = self.nearest(probe[None, :], model_id=model_id, k=top_k)
        hits = [(int(i), float(d)) for i, d in zip(ids[0], dists[0], strict=True) if i >= 0]
        if threshold is not None:
            hits = [(i, d) for i, d in hits if d <= threshold]
        found = {f.id: f for f in self.store.get_faces([i for i, _ in hits])}
        return [SimilarFace(found[i], d, distance_to_similarity(d)) for i, d in hits if i in found]

    def face_embedding(self, face_id: int) -> tuple[Observation, npt.NDArray[np.float32]]:
        faces = self.store.get_faces([face_id])
        if not faces:
            raise ObservationNotFound(f"no photo face {face_id}")
        return faces[0], self.store.embeddings_of([face_id])[0]

    # ------------------------------------------------------------------ erasure and privacy
    def delete_photo(self, photo_id: str, *, gallery: Any) -> list[Observation]:
        """Erase the gallery templates enrolled from the photo's faces, then the faces (store, index). Templates
        first: a gallery failure leaves the faces in place, so a retry finds them and ends the erasure."""
        with self.write_lock:
            done = _erase_templates(gallery, self.store.photo_faces(photo_id))
            faces = self.store.delete_photo(photo_id)
            self._erase_from_index(faces)
        _erase_templates(gallery, [f for f in faces if f.face_id not in done])  # named meanwhile, elsewhere
        return faces

    def erase_subject_faces(self, subject_id: str, *, gallery: Any | None = None) -> list[Observation]:
        """Erase every photo face named ``subject_id`` (and, with ``gallery``, first the templates enrolled from
        them, so that a gallery failure leaves the faces for a retry to find)."""
        with self.write_lock:
            done = _erase_templates(gallery, self.store.subject_faces(subject_id)) if gallery is not None else set()
            faces = self.store.delete_subject_faces(subject_id)
            self._erase_from_index(faces)
        if gallery is not None:
            _erase_templates(gallery, [f for f in faces if f.face_id not in done])
        return faces

    def forget_subject(self, subject_id: str) -> int:
        """The subject was erased but its photo faces are kept: they become one cluster of unnamed faces."""
        with self.write_lock:
            return len(self.store.unname_subject(subject_id))

    def enforce_retention(self, now: float | None = None) -> int:
        """Erase unnamed faces older than ``retention_days`` (0 = keep); returns how many were erased."""
        if self.retention_days <= 0:
            return 0
        cutoff = (time.time() if now is None else now) - self.retention_days * 86400.0
        with self.write_lock:
            faces = self.store.delete_unnamed_before(cutoff)
            self._erase_from_index(faces)
        if faces:
            log.info("photo library: retention erased %d unnamed faces", len(faces))
        return len(faces)

    def close(self) -> None:
        """Write the index snapshots, then close the store."""
        self.index.save()
        self.store.close()


def _subject_exists(gallery: Any, subject_id: str) -> bool:
    try:
        gallery.get_subject(subject_id)
    except SubjectNotFound:
        return False
    return True


def _erase_templates(gallery: Any, faces: Sequence[Observation]) -> set[int]:
    """Delete the gallery faces enrolled from ``faces``; returns their ids."""
    done: set[int] = set()
    for f in faces:
        if f.face_id is not None:
            with contextlib.suppress(FaceNotFound):
                gallery.delete_face(f.face_id)
            done.add(f.face_id)
    return done
