"""Opening the embedded gallery's index cache: for each model, load its snapshot and replay the SQLite changes
made after it, or rebuild the index from SQLite when the snapshot is missing, corrupt, from another
gallery/schema or inconsistent with SQLite (SQLite is the truth; the index is a cache)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from service.gallery import snapshot
from service.gallery.errors import SnapshotInvalid
from service.gallery.index import ModelIndex
from service.gallery.local.cache import IndexCache
from service.gallery.segment import IndexParams
from service.gallery.sqlite import SCHEMA_VERSION, SQLiteStore
from service.gallery.types import SnapshotInfo

log = logging.getLogger("facerec.gallery")

ProgressFn = Callable[[str, int, int], None]
"""``progress(stage, done, total)``: e.g. ``("rebuild facenet-...", 30000, 100000)``, in faces."""


def open_cache(
    store: SQLiteStore,
    data_dir: Path,
    params: IndexParams,
    *,
    resave_after: int,
    progress: ProgressFn | None = None,
) -> tuple[IndexCache, dict[str, SnapshotInfo]]:
    """The index cache of every model in ``store`` and the snapshots it was loaded from. ``resave_after``: the
    unsaved-change count that makes the next maintenance save a snapshot (set when an index was converted)."""
    ids, pks = store.face_subject_pairs()
    cache = IndexCache(params, store.watermarks(), ids, pks)
    infos: dict[str, SnapshotInfo] = {}
    for model_id in sorted(store.faces_by_model()):
        path = snapshot.snapshot_path(data_dir, model_id)
        try:
            index, info, replayed = _load(store, cache, path, model_id, params)
            converted = index.convert_storage()  # e.g. a float32 HNSW saved before fp16: same graph, new codes
            if converted:
                log.info("gallery: converted the %s HNSW to %s storage", model_id, converted)
                replayed += resave_after  # save the converted index soon
            infos[model_id] = info
        except SnapshotInvalid as e:
            log.warning("gallery: rebuilding the %s index from SQLite: %s", model_id, e)
            index, replayed = _rebuild(store, model_id, params, progress)
        cache.models[model_id] = index
        cache.unsaved += replayed
    return cache, infos


def _load(
    store: SQLiteStore, cache: IndexCache, path: Path, model_id: str, params: IndexParams
) -> tuple[ModelIndex, SnapshotInfo, int]:
    """The snapshot's index with the later SQLite changes replayed, its info and the number replayed."""
    index, header = snapshot.load(path, params)
    max_face, max_del = cache.applied
    if header.gallery_uuid != store.gallery_uuid:
        raise SnapshotInvalid(f"{path}: from another gallery")
    if header.schema_version != SCHEMA_VERSION or header.model_id != model_id:
        raise SnapshotInvalid(f"{path}: schema {header.schema_version} / model {header.model_id!r}")
    if header.max_face_id > max_face or header.max_deletion_seq > max_del:
        raise SnapshotInvalid(f"{path}: newer than the database (restored backup?)")
    if header.max_deletion_seq < store.pruned_deletions():
        raise SnapshotInvalid(f"{path}: older than the kept deletions log")
    replayed = 0
    for fids, vecs in store.iter_embeddings(model_id, after_id=header.max_face_id):
        index.add(fids, vecs)
        replayed += len(fids)
    dels = store.deletions_after(model_id, header.max_deletion_seq)
    index.erase(dels)
    replayed += len(dels)
    expected = store.count_faces(model_id)
    if index.live != expected:
        raise SnapshotInvalid(f"{path}: {index.live} faces after replay, SQLite has {expected}")
    log.info(
        "gallery: loaded %s (%d faces, replayed changes after %s)",
        path,
        index.live,
        (header.max_face_id, header.max_deletion_seq),
    )
    return index, SnapshotInfo(str(path), header.max_face_id, header.max_deletion_seq, header.saved_at), replayed


def _rebuild(
    store: SQLiteStore, model_id: str, params: IndexParams, progress: ProgressFn | None
) -> tuple[ModelIndex, int]:
    """A flat index of every face of ``model_id`` read from SQLite (HNSW follows via maintenance)."""
    index = ModelIndex(params)
    total = store.count_faces(model_id)
    done = 0
    stage = f"rebuild {model_id}"
    if progress:
        progress(stage, 0, total)
    for fids, vecs in store.iter_embeddings(model_id):
        index.add(fids, vecs)
        done += len(fids)
        if progress:
            progress(stage, done, total)
    return index, done
