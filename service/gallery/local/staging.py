"""Re-index staging into an embedded gallery that a server process holds open (``facerec reindex`` while it
serves): a second SQLite connection that writes only the staging table, serialised with the server's writer by
SQLite's own locking. It never writes the ``faces``/``deletions`` rows the server's index mirrors, so the server
keeps serving; the switch happens when the server restarts with the new ``FACEREC_MODEL``."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

from service.gallery.sqlite import SQLiteStore
from service.gallery.validation import unit_vectors


class SideStaging:
    """The staging methods of :class:`service.gallery.base.Gallery` on a data dir without taking its lock."""

    def __init__(self, data_dir: Path) -> None:
        self._store = SQLiteStore(Path(data_dir))

    def reindex_counts(self, model_id: str) -> dict[str, int]:
        return self._store.reindex_counts(model_id)

    def crops_to_embed(self, model_id: str, after_id: int, limit: int) -> list[tuple[int, bytes]]:
        return self._store.crops_to_embed(model_id, after_id, limit)

    def stage_embeddings(self, model_id: str, face_ids: Sequence[int], embeddings: npt.NDArray[np.float32]) -> int:
        vecs = unit_vectors(embeddings, "embedding")
        return self._store.stage_embeddings(model_id, face_ids, [v.astype("<f4").tobytes() for v in vecs])

    def close(self) -> None:
        self._store.close()
