"""``facerec gallery migrate``'s media part: a data dir's embedded events, streams, video jobs and photo library
copied into the real PostgreSQL (ids kept, a second run copies nothing twice), then read through the
PostgreSQL stores."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from service.events.store import Event
from service.gallery.postgres.connection import PoolOptions
from service.pgstores import open_postgres
from service.pgstores.migrate_media import copy_media
from service.photos.types import NewObservation
from tests.storefixtures import sqlite_stores


def test_copy_media_keeps_ids_and_resumes(tmp_path: Path, pg_url: str) -> None:
    data = tmp_path / "data"
    src = sqlite_stores(data)
    now = time.time()
    src.events.add([Event(f"e{i}", now + i, "video:v", i, "s1", "Ada", 0.4, 0.01, 0.0, 1.0, 3) for i in range(5)],
                   outbox=True)  # fmt: skip
    stream = src.streams.add(name="door", url="rtsp://cam/1", fps=5.0)
    job_id, path = src.jobs.new_path()
    path.write_bytes(b"video")
    src.jobs.create(job_id, filename="clip.mp4", path=path, fps=None, size=5)
    rng = np.random.default_rng(3)
    emb = rng.standard_normal((3, 128)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    box, quality = {"x": 0, "y": 0, "width": 90, "height": 90}, {"face_size": 90.0}
    _, faces, _ = src.photos.add_photo(
        sha256="abc", external_id="a.jpg",
        faces=[NewObservation(e, "m", box, quality, crop_png=b"png" if i else None) for i, e in enumerate(emb)],
    )  # fmt: skip
    ids = [f.id for f in faces]
    src.photos.add_cannot_links([(ids[0], ids[1])])
    src.photos.set_subject([ids[2]], "s1", {ids[2]: 7})
    naming = src.photos.begin_naming(cluster_id=4, faces=ids[:2], enrol=ids[:1], subject_id=None, name="Ada")
    for store in (src.events, src.streams, src.jobs, src.photos):
        store.close()

    open_postgres(pg_url).close()  # the schema, as the first replica (or the gallery migration) makes it
    counts = copy_media(data, pg_url, batch=2)
    assert copy_media(data, pg_url, batch=2) == counts  # again: nothing twice
    assert counts["events"] == (5, 5) and counts["outbox"] == (5, 5) and counts["observations"] == (3, 3)
    assert all(s == t for s, t in counts.values()), counts

    backend = open_postgres(pg_url, pool=PoolOptions(min_size=1, max_size=2))
    try:
        pg = backend.media_stores(data)  # the same data dir: the same replica id, so its queued job is its own
        assert [e.id for e in pg.events.query()[0]] == [f"e{i}" for i in range(5)] and pg.events.pending_count() == 5
        assert pg.streams.all() == [stream]
        assert pg.jobs.next_queued() is not None and pg.jobs.get(job_id).path == str(path)
        assert [f.id for f in pg.photos.photo_faces(faces[0].photo_id)] == ids
        assert np.allclose(pg.photos.embeddings_of(ids), emb) and pg.photos.crop_png(ids[1]) == b"png"
        assert pg.photos.cannot_links() == [(ids[0], ids[1])] and pg.photos.get_faces([ids[2]])[0].face_id == 7
        clusters = pg.photos.cluster_of(ids)
        assert set(clusters) == {ids[0], ids[1]} and max(pg.photos.new_cluster_ids(1)) > max(clusters.values())
        assert pg.photos.pending_namings() == [naming]  # a naming a crash left half done is finished after
        assert pg.photos.begin_naming(cluster_id=5, faces=[], enrol=[], subject_id=None, name="B").id > naming.id
        _, more, _ = pg.photos.add_photo(sha256="new", external_id=None, faces=[NewObservation(emb[0], "m", box, {})])
        assert more[0].id > max(ids)
    finally:
        backend.close()
