"""The photo library's search index (real FAISS, real SQLite): HNSW past its threshold, snapshots that survive
a restart, reconciliation of a stale snapshot with the store, erasure removing the snapshot."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from service.gallery.segment import IndexParams
from service.photos.index import SNAP_DIR
from service.photos.library import PhotoLibrary
from service.photos.sqlite import SQLitePhotoStore
from tests.photos.test_library import MODEL, index_all, obs, people

PARAMS = IndexParams(hnsw_threshold=40, hnsw_m=16, ef_construction=40, ef_search=64, merge_batch=8, merge_chunk=4)


def open_lib(path: Path) -> PhotoLibrary:
    return PhotoLibrary(SQLitePhotoStore(path), index_params=PARAMS, index_dir=path)


def filled(path: Path, n_people: int, per: int) -> tuple[PhotoLibrary, np.ndarray, list[int]]:
    """A library in ``path`` with ``per`` photos of each of ``n_people``; its embeddings and face ids."""
    lib = open_lib(path)
    emb, _ = people(n_people, per)
    return lib, emb, index_all(lib, emb)


def nearest_id(lib: PhotoLibrary, e: np.ndarray) -> int:
    return lib.search(e, model_id=MODEL, top_k=1, threshold=None)[0].face.id


def test_hnsw_is_built_past_the_threshold_and_finds_every_face(tmp_path: Path) -> None:
    lib = open_lib(tmp_path)
    due: list[bool] = []
    lib.index.on_due = lambda: due.append(True)
    emb, _ = people(12, 5)
    ids = index_all(lib, emb)
    assert due and lib.index.kind(MODEL) == "flat"
    lib.index.maintain()
    assert lib.index.kind(MODEL) == "hnsw"
    assert [nearest_id(lib, e) for e in emb] == ids
    # adds after the build go to a flat segment, then are merged into the main
    more, _ = people(3, 4, seed=1)
    extra = [lib.add_faces(sha256=f"m{i}", external_id=None, faces=[obs(e)]).faces[0].id for i, e in enumerate(more)]
    lib.index.maintain()
    assert len(lib.index.model(MODEL).segments[0].ids()) == len(ids) + len(extra)
    assert [nearest_id(lib, e) for e in more] == extra
    lib.close()


def test_snapshot_is_reloaded_and_reconciled_with_the_store(tmp_path: Path) -> None:
    lib, emb, ids = filled(tmp_path, 10, 5)
    lib.index.maintain()
    lib.close()
    snaps = list((tmp_path / SNAP_DIR).glob("*.snap"))
    assert len(snaps) == 1
    # the store changes behind the snapshot's back (as a crash after a store write would leave it)
    store = SQLitePhotoStore(tmp_path)
    gone = store.delete_photo(store.get_faces([ids[3]])[0].photo_id)
    new_emb, _ = people(1, 1, seed=7)
    _, added, _ = store.add_photo(sha256="late", external_id=None, faces=[obs(new_emb[0])])
    store.close()
    again = open_lib(tmp_path)
    assert again.index.kind(MODEL) == "hnsw"  # the graph came from the snapshot, not rebuilt
    assert nearest_id(again, new_emb[0]) == added[0].id
    assert nearest_id(again, emb[3]) != gone[0].id
    assert set(again.index.model(MODEL).live_ids().tolist()) == (set(ids) - {gone[0].id}) | {added[0].id}
    again.close()


def test_a_corrupt_snapshot_is_ignored(tmp_path: Path) -> None:
    lib, emb, ids = filled(tmp_path, 3, 2)
    lib.close()
    (snap,) = (tmp_path / SNAP_DIR).glob("*.snap")
    snap.write_bytes(snap.read_bytes()[:-10])
    again = open_lib(tmp_path)
    assert [nearest_id(again, e) for e in emb] == ids
    again.close()


def test_erasing_faces_removes_the_snapshot_until_the_next_save(tmp_path: Path) -> None:
    lib, _, ids = filled(tmp_path, 3, 2)
    lib.index.save()
    assert list((tmp_path / SNAP_DIR).glob("*.snap"))
    photo = lib.store.get_faces([ids[0]])[0].photo_id
    lib.delete_photo(photo, gallery=None)
    assert not list((tmp_path / SNAP_DIR).glob("*.snap"))
    lib.close()
    again = open_lib(tmp_path)
    assert ids[0] not in again.index.model(MODEL).live_ids().tolist()
    again.close()


def test_catch_up_finds_a_face_committed_below_the_newest_id_it_has_seen(tmp_path: Path) -> None:
    """Two processes share a store (as replicas share PostgreSQL, whose ids may commit out of order): a face the
    index has not seen but whose id is below its newest one is found at the next catch-up."""
    lib, _, _ = filled(tmp_path, 3, 2)
    other = SQLitePhotoStore(tmp_path)
    late, _ = people(3, 1, seed=5)
    added = [other.add_photo(sha256=f"o{i}", external_id=None, faces=[obs(e)])[1][0].id for i, e in enumerate(late)]
    assert nearest_id(lib, late[1]) == added[1]  # caught up with all three
    lib.index.model(MODEL).erase([added[0]])  # as if the index had read the store before that face committed
    more, _ = people(1, 1, seed=6)
    other.add_photo(sha256="o-next", external_id=None, faces=[obs(more[0])])
    assert nearest_id(lib, late[0]) == added[0]
    other.close()
    lib.close()


def test_per_model_counts_and_catch_up_reads_use_an_index(tmp_path: Path) -> None:
    """The catch-up's counts and id-ordered reads of one model search ``obs_model``, not the whole table."""
    store = SQLitePhotoStore(tmp_path)
    with store.transaction() as c:
        for sql in (
            "SELECT COUNT(*) FROM observations WHERE model_id = ?",
            "SELECT id, embedding FROM observations WHERE model_id = ? AND id > ? ORDER BY id",
        ):
            plan = " ".join(str(r[-1]) for r in c.execute(f"EXPLAIN QUERY PLAN {sql}", (MODEL, 0)[: sql.count("?")]))
            assert "obs_model" in plan, plan


def test_a_process_drops_its_snapshot_of_faces_another_process_erased(tmp_path: Path) -> None:
    """Two processes on one store (replicas on one database): faces one of them erases leave the other's index at
    its next upkeep, and that process's snapshot file, which held their embeddings, goes at once."""
    eraser, emb, ids = filled(tmp_path, 4, 3)
    other = PhotoLibrary(SQLitePhotoStore(tmp_path), index_params=PARAMS, index_dir=tmp_path / "other")
    try:
        assert nearest_id(other, emb[0]) == ids[0]  # its index is loaded
        other.index.save()
        (snap,) = (tmp_path / "other" / SNAP_DIR).iterdir()
        erased = ids[:3]  # the first person's faces
        eraser.store.set_subject(erased, "person-0", {})
        eraser.erase_subject_faces("person-0")
        assert snap.exists()  # the other process has not looked at the store yet
        other.index.maintain(save=False)
        assert not snap.exists(), "the other process's snapshot still held the erased faces"
        assert nearest_id(other, emb[0]) not in erased
    finally:
        other.close()
        eraser.close()
    reopened = PhotoLibrary(SQLitePhotoStore(tmp_path), index_params=PARAMS, index_dir=tmp_path / "other")
    try:
        assert nearest_id(reopened, emb[0]) not in erased  # the snapshot written at close holds them no more
    finally:
        reopened.close()


def test_a_snapshot_older_than_an_erasure_goes_when_it_is_loaded(tmp_path: Path) -> None:
    """A process that had not loaded its index when faces were erased elsewhere deletes its stale snapshot as
    soon as it loads it (reconciled with the store), not only at its next save."""
    lib, emb, ids = filled(tmp_path, 4, 3)
    lib.close()  # writes the snapshot with every face
    (snap,) = (tmp_path / SNAP_DIR).iterdir()
    store = SQLitePhotoStore(tmp_path)
    store.set_subject(ids[:3], "person-0", {})
    PhotoLibrary(store).erase_subject_faces("person-0")  # another process, without an index dir
    store.close()
    reopened = open_lib(tmp_path)
    try:
        assert nearest_id(reopened, emb[0]) not in ids[:3]
        assert not snap.exists(), "the snapshot holding the erased faces was kept after the load"
    finally:
        reopened.close()
