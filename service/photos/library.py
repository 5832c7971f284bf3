"""The photo library: index photos' faces, find similar faces, the photos a person is in, privacy erasure.

:class:`PhotoLibrary` holds the :class:`~service.photos.base.PhotoStore` (the durable truth) and a FAISS
:class:`~service.gallery.index.ModelIndex` per model id over every observation (a cache built from the store
when first needed, and brought up to date from it whenever the store's change counter moved, so replicas
sharing one database store search what any of them indexed). Naming an observation uses the enrolled gallery
through ``recognition.identify``; enrolling a named cluster goes through the
:class:`~service.gallery.base.Gallery` protocol (``service.photos.clusters``).

Distances are L2 between unit embeddings in [0, 2]; ``similarity = 1 - d**2 / 2``. Thread-safe: index
changes and cluster assignment of new faces take one lock; searches share a readers-writer lock.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from embeddings import FaceAnalyzer
from service import recognition
from service.gallery import FaceNotFound
from service.gallery.calibration import load_calibration
from service.gallery.crops import encode_crop
from service.gallery.index import IndexParams, ModelIndex
from service.gallery.rwlock import RWLock
from service.photos.base import PhotoStore
from service.photos.cluster import ClusterParams, linking_threshold, vote
from service.photos.errors import ObservationNotFound
from service.photos.types import NewObservation, Observation, Photo

log = logging.getLogger("facerec.photos")

JOIN_NEIGHBOURS = 10
"""Nearest indexed faces a new unnamed face looks at to pick its cluster."""


@dataclass
class IndexedPhoto:
    """The result of indexing one photo; ``created`` False: this sha256 was indexed before (nothing changed)."""

    photo: Photo
    faces: list[Observation]
    created: bool
    join_ms: float = 0.0
    """Time spent choosing clusters and updating the search index for the new faces, milliseconds."""


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
    ) -> None:
        self.store = store
        self.cluster_params = cluster_params or ClusterParams()
        """``threshold``: the linking distance, or its cap when ``link_max_fir`` is set."""
        self.link_max_fir = link_max_fir
        self._unnamed: dict[str, int] = {}
        """Unnamed faces per model id for the joining threshold: read from the store once, counted up as faces
        join, re-read by every re-clustering (erasures in between leave it a little high: a slightly tighter link)."""
        self.retention_days = retention_days
        self.index_params = index_params or IndexParams()
        self._indexes: dict[str, ModelIndex] = {}
        self._seen: dict[str, int] = {}
        """The highest observation id in each model's index (the store gives ids in commit order)."""
        self._synced: dict[str, int] = {}
        """The store's change counter when each index was last brought up to date."""
        self._sync_lock = threading.Lock()
        self._rw = RWLock()
        self.write_lock = threading.Lock()
        """Serialises cluster assignment + store write + index add of new faces, and cluster changes."""
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
    def _index(self, model_id: str) -> ModelIndex:
        """The index of ``model_id``, built from the store on first use, then brought up to date with the store
        whenever its change counter moved (writes through another process sharing the store: a replica)."""
        with self._sync_lock:
            changes = self.store.change_count()
            idx = self._indexes.get(model_id)
            if idx is not None and self._synced.get(model_id) == changes:
                return idx
            if idx is None:
                idx = self._indexes[model_id] = ModelIndex(self.index_params)
                self._seen[model_id] = 0
            ids, emb = self.store.all_embeddings(model_id, after=self._seen[model_id])
            with self._rw.exclusive():
                idx.add(ids, emb)
            if len(ids):
                self._seen[model_id] = int(ids[-1])
            if idx.live > self.store.observation_count(model_id):  # erased elsewhere: start again
                ids, emb = self.store.all_embeddings(model_id)
                fresh = ModelIndex(self.index_params)
                fresh.add(ids, emb)
                with self._rw.exclusive():
                    idx = self._indexes[model_id] = fresh
                self._seen[model_id] = int(ids[-1]) if len(ids) else 0
            self._synced[model_id] = changes
            return idx

    def nearest(
        self, probes: npt.NDArray[np.float32], *, model_id: str, k: int
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
        """``k`` nearest indexed faces per probe row: L2 distances ascending and observation ids (-1 = none)."""
        idx = self._index(model_id)
        with self._rw.shared():
            return idx.search(np.ascontiguousarray(probes, np.float32), k)

    def _erase_from_index(self, faces: Sequence[Observation]) -> None:
        by_model: dict[str, list[int]] = {}
        for f in faces:
            by_model.setdefault(f.model_id, []).append(f.id)
        with self._rw.exclusive():
            for model_id, ids in by_model.items():
                if model_id in self._indexes:
                    self._indexes[model_id].erase(ids)

    # ------------------------------------------------------------------ indexing
    def index_photo(
        self,
        *,
        analyzer: FaceAnalyzer,
        gallery: Any,
        image: bytes,
        external_id: str | None = None,
        store_crop: bool = True,
        fixed_threshold: float | None = None,
        max_fir: float | None = None,
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
            fixed_threshold=fixed_threshold,
            max_fir=max_fir,
        )
        faces: list[NewObservation] = []
        for item in result.faces:
            box, quality = recognition.face_summary(item.face)
            quality["reasons"] = list(item.face.quality.reasons)
            faces.append(
                NewObservation(
                    embedding=item.face.embedding,
                    model_id=result.model_id,
                    box=box,
                    quality=quality,
                    crop_png=encode_crop(item.face.crop) if store_crop else None,
                    subject_id=item.match.subject_id if item.match else None,
                    distance=item.match.distance if item.match else None,
                )
            )
        return self.add_faces(sha256=digest, external_id=external_id, faces=faces)

    def add_faces(self, *, sha256: str, external_id: str | None, faces: list[NewObservation]) -> IndexedPhoto:
        """Store a photo's analysed faces: unnamed ones join clusters (:func:`~service.photos.cluster.vote` over
        their nearest unnamed neighbours), then the store write and the index add, under the write lock."""
        with self.write_lock:
            start = time.perf_counter()
            faces = self._assign_clusters(faces)
            photo, stored, created = self.store.add_photo(sha256=sha256, external_id=external_id, faces=faces)
            if created and stored:
                self._index(stored[0].model_id)  # catches up on the new faces (and any another replica added)
            join_ms = (time.perf_counter() - start) * 1000.0
        return IndexedPhoto(photo, stored, created=created, join_ms=join_ms)

    def _assign_clusters(self, faces: list[NewObservation]) -> list[NewObservation]:
        unnamed = [i for i, f in enumerate(faces) if f.subject_id is None]
        if not unnamed:
            return faces
        model_id = faces[unnamed[0]].model_id
        probes = np.stack([faces[i].embedding for i in unnamed]).astype(np.float32)
        dists, ids = self.nearest(probes, model_id=model_id, k=JOIN_NEIGHBOURS)
        if model_id not in self._unnamed:
            self._unnamed[model_id] = self.store.unnamed_count(model_id)
        self._unnamed[model_id] += len(unnamed)
        threshold = self.link_threshold(self._unnamed[model_id], model_id=model_id)
        clusters = self.store.cluster_of(sorted({int(i) for i in ids.reshape(-1) if i >= 0}))
        out = list(faces)
        for row, i in enumerate(unnamed):
            pairs = [(clusters[int(j)], float(d)) for j, d in zip(ids[row], dists[row], strict=True) if j in clusters]
            chosen = vote([c for c, _ in pairs], [d for _, d in pairs], threshold)
            if chosen is not None:
                f = faces[i]
                out[i] = NewObservation(
                    f.embedding, f.model_id, f.box, f.quality, f.crop_png, None, None, cluster_id=chosen
                )
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
        return [SimilarFace(found[i], d, 1.0 - d * d / 2.0) for i, d in hits if i in found]

    def face_embedding(self, face_id: int) -> tuple[Observation, npt.NDArray[np.float32]]:
        faces = self.store.get_faces([face_id])
        if not faces:
            raise ObservationNotFound(f"no photo face {face_id}")
        return faces[0], self.store.embeddings_of([face_id])[0]

    # ------------------------------------------------------------------ erasure and privacy
    def delete_photo(self, photo_id: str, *, gallery: Any) -> list[Observation]:
        """Erase the photo's faces (store, index) and the gallery templates enrolled from them."""
        with self.write_lock:
            faces = self.store.delete_photo(photo_id)
            self._erase_from_index(faces)
        _erase_templates(gallery, faces)
        return faces

    def erase_subject_faces(self, subject_id: str, *, gallery: Any | None = None) -> list[Observation]:
        """Erase every photo face named ``subject_id`` (and, with ``gallery``, the templates enrolled from them)."""
        with self.write_lock:
            faces = self.store.delete_subject_faces(subject_id)
            self._erase_from_index(faces)
        if gallery is not None:
            _erase_templates(gallery, faces)
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
        self.store.close()


def _erase_templates(gallery: Any, faces: Sequence[Observation]) -> None:
    for f in faces:
        if f.face_id is not None:
            with contextlib.suppress(FaceNotFound):
                gallery.delete_face(f.face_id)
