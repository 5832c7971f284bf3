"""The in-memory index cache of the embedded gallery: one :class:`ModelIndex` per model id, the face -> subject
map the search groups by, and the watermarks of the SQLite state they mirror.

Every mutation happens under :attr:`IndexCache.rw` held exclusively, after the SQLite transaction it mirrors
committed (the index only ever holds committed faces); searches hold it shared. ``unsaved`` counts changes no
snapshot holds yet and ``erased_at`` is when the first unsaved erasure happened (a snapshot may still hold that
embedding): the maintenance thread saves a snapshot from them.
"""

from __future__ import annotations

import time

import numpy as np
import numpy.typing as npt

from service.gallery.index import ModelIndex
from service.gallery.rwlock import RWLock
from service.gallery.segment import IndexParams
from service.gallery.sqlite import Watermarks
from service.gallery.types import IndexInfo


class IndexCache:
    """Per-model FAISS indexes keyed by face id, and ``subject_of[face id]`` = subject pk (-1 when erased)."""

    def __init__(
        self, params: IndexParams, applied: Watermarks, face_ids: npt.NDArray[np.int64], pks: npt.NDArray[np.int64]
    ) -> None:
        self.params = params
        self.rw = RWLock()
        self.models: dict[str, ModelIndex] = {}
        self.applied = applied
        self.subject_of = np.full(max(int(face_ids.max()) + 1 if len(face_ids) else 0, 1024), -1, dtype=np.int64)
        self.subject_of[face_ids] = pks
        self.unsaved = 0
        """Changes the index holds that no snapshot does (replayed, rebuilt or new); 0 = snapshot current."""
        self.erased_at: float | None = None

    def index_for(self, model_id: str) -> ModelIndex:
        """The model's index, created empty if it has none (caller holds ``rw`` exclusively)."""
        idx = self.models.get(model_id)
        if idx is None:
            idx = self.models[model_id] = ModelIndex(self.params)
        return idx

    def add(
        self,
        ids: npt.NDArray[np.int64],
        vecs: npt.NDArray[np.float32],
        models: npt.NDArray[np.str_],
        subject_pks: npt.NDArray[np.int64],
        applied: Watermarks,
    ) -> None:
        """Mirror committed new faces: ``ids[i]`` of model ``models[i]`` and subject ``subject_pks[i]``."""
        with self.rw.exclusive():
            top = int(ids.max())
            if top >= len(self.subject_of):
                grown = np.full(max(top + 1, 2 * len(self.subject_of)), -1, np.int64)
                grown[: len(self.subject_of)] = self.subject_of
                self.subject_of = grown
            self.subject_of[ids] = subject_pks
            for model_id in np.unique(models):
                sel = models == model_id
                self.index_for(str(model_id)).add(ids[sel], vecs[sel])
            self.applied = applied
        self.unsaved += len(ids)

    def erase(self, faces: list[tuple[int, str]], applied: Watermarks) -> None:
        """Mirror committed erasures of ``(face id, model id)``."""
        with self.rw.exclusive():
            for model_id in {m for _, m in faces}:
                idx = self.models.get(model_id)
                if idx is not None:
                    idx.erase([f for f, m in faces if m == model_id])
            for fid, _ in faces:
                if fid < len(self.subject_of):
                    self.subject_of[fid] = -1
            self.applied = applied
        self.unsaved += len(faces)
        if faces and self.erased_at is None:
            self.erased_at = time.monotonic()

    def switch(
        self, old: list[tuple[int, str]], vecs: npt.NDArray[np.float32], model_id: str, applied: Watermarks
    ) -> None:
        """Mirror a committed model switch: faces ``old`` (face id, old model) leave their old models' indexes
        and join ``model_id``'s with ``vecs`` (same order)."""
        ids = np.fromiter((f for f, _ in old), np.int64, len(old))
        with self.rw.exclusive():
            for old_model in {m for _, m in old}:
                idx = self.models.get(old_model)
                if idx is not None:
                    idx.erase([f for f, m in old if m == old_model])
            self.index_for(model_id).add(ids, vecs)
            self.applied = applied
        self.unsaved += 2 * len(old)
        if self.erased_at is None:  # the old model's snapshot holds the old embeddings: replace it soon
            self.erased_at = time.monotonic()

    def face_count(self, model_id: str) -> int:
        """Live faces of ``model_id``."""
        with self.rw.shared():
            idx = self.models.get(model_id)
            return idx.live if idx is not None else 0

    def infos(self) -> tuple[dict[str, IndexInfo], Watermarks]:
        """Each model's index description and the watermarks the cache mirrors, read together."""
        with self.rw.shared():
            infos = {
                m: IndexInfo(
                    kind=i.kind,
                    live=i.live,
                    hnsw=i.main.live if i.main is not None else 0,
                    flat=sum(s.live for s in i.segments if s.kind == "flat"),
                    tombstones=i.tombstones,
                    building=i.building,
                )
                for m, i in self.models.items()
            }
            return infos, self.applied

    def live_ids(self, model_id: str) -> npt.NDArray[np.int64]:
        """Face ids the index holds for ``model_id``, ascending."""
        with self.rw.shared():
            idx = self.models.get(model_id)
            return np.sort(idx.live_ids()) if idx is not None else np.zeros(0, np.int64)

    def set_ef_search(self, ef: int) -> None:
        with self.rw.exclusive():
            for idx in self.models.values():
                idx.set_ef_search(ef)
