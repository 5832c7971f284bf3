"""``facerec gallery migrate``'s media part: a data dir's embedded events, streams, video jobs and photo library
copied into the real PostgreSQL (ids kept, a second run copies nothing twice), then read through the
PostgreSQL stores."""

from __future__ import annotations

import sqlite3
import time
from collections import Counter
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import psycopg
import pytest

from service.events.store import Event
from service.gallery.postgres.connection import PoolOptions
from service.pgstores import open_postgres
from service.pgstores.migrate_media import TABLES, SchemaMismatch, copy_media
from service.photos.types import Naming, NewObservation, Observation
from service.streams.store import StreamConfig
from tests.storefixtures import add_cannot_link, add_merge_group, sqlite_stores

BOX, QUALITY = {"x": 0, "y": 0, "width": 90, "height": 90}, {"face_size": 90.0}
GENERATED = {"events": {"seq"}}
"""Columns the target numbers itself (not copied)."""
FILLED = {"video_jobs": {"owner"}}
"""Target columns the migration fills (the replica id), not copied."""


@dataclass
class Embedded:
    """What :func:`embedded_data` wrote: a row in every table :func:`copy_media` copies."""

    stream: StreamConfig
    job_id: str
    job_path: Path
    emb: npt.NDArray[np.float32]
    faces: list[Observation]
    naming: Naming

    @property
    def ids(self) -> list[int]:
        return [f.id for f in self.faces]


def embedded_data(data: Path) -> Embedded:
    """A data dir whose embedded stores hold events with their outbox, a stream, a queued video job and a photo
    with three faces, a cannot-link, a merge group, a named face and a pending naming (the stores closed again)."""
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
    _, faces, _ = src.photos.add_photo(
        sha256="abc", external_id="a.jpg",
        faces=[NewObservation(e, "m", BOX, QUALITY, crop_png=b"png" if i else None) for i, e in enumerate(emb)],
    )  # fmt: skip
    ids = [f.id for f in faces]
    add_cannot_link(src.photos, ids[0], ids[1])
    add_merge_group(src.photos, ids[1:], 9)
    src.photos.set_subject([ids[2]], "s1", {ids[2]: 7})
    naming = src.photos.begin_naming(cluster_id=4, faces=ids[:2], enrol=ids[:1], subject_id=None, name="Ada")
    for store in (src.events, src.streams, src.jobs, src.photos):
        store.close()
    return Embedded(stream, job_id, path, emb, faces, naming)


def test_copy_media_keeps_ids_and_resumes(tmp_path: Path, pg_url: str) -> None:
    data = tmp_path / "data"
    made = embedded_data(data)
    ids, emb, naming = made.ids, made.emb, made.naming
    open_postgres(pg_url).close()  # the schema, as the first replica (or the gallery migration) makes it
    counts = copy_media(data, pg_url, batch=2)
    assert copy_media(data, pg_url, batch=2) == counts  # again: nothing twice
    assert counts["events"] == (5, 5) and counts["outbox"] == (5, 5) and counts["observations"] == (3, 3)
    assert all(s == t for s, t in counts.values()), counts

    backend = open_postgres(pg_url, pool=PoolOptions(min_size=1, max_size=2))
    try:
        pg = backend.media_stores(data)  # the same data dir: the same replica id, so its queued job is its own
        assert [e.id for e in pg.events.query()[0]] == [f"e{i}" for i in range(5)] and pg.events.pending_count() == 5
        assert pg.streams.all() == [made.stream]
        assert pg.jobs.next_queued() is not None and pg.jobs.get(made.job_id).path == str(made.job_path)
        assert [f.id for f in pg.photos.photo_faces(made.faces[0].photo_id)] == ids
        assert np.allclose(pg.photos.embeddings_of(ids), emb) and pg.photos.crop_png(ids[1]) == b"png"
        assert pg.photos.cannot_links() == [(ids[0], ids[1])] and pg.photos.get_faces([ids[2]])[0].face_id == 7
        clusters = pg.photos.cluster_of(ids)
        assert set(clusters) == {ids[0], ids[1]} and max(pg.photos.new_cluster_ids(1)) > max(clusters.values())
        assert pg.photos.merged_groups() == []  # ids[2] is named: a group of one unnamed face holds nothing
        assert max(pg.photos.new_cluster_ids(1)) > 9  # past the copied group label too
        assert pg.photos.pending_namings() == [naming]  # a naming a crash left half done is finished after
        assert pg.photos.begin_naming(cluster_id=5, faces=[], enrol=[], subject_id=None, name="B").id > naming.id
        _, more, _ = pg.photos.add_photo(sha256="new", external_id=None, faces=[NewObservation(emb[0], "m", BOX, {})])
        assert more[0].id > max(ids)
    finally:
        backend.close()


def _source_columns(data: Path, file: str, name: str) -> list[str]:
    with closing(sqlite3.connect(data / file)) as src:
        return [str(row[1]) for row in src.execute(f"PRAGMA table_info({name})")]


def _target_columns(pg: psycopg.Connection[tuple[object, ...]], target: str) -> list[str]:
    rows = pg.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_schema = current_schema()"
        " AND table_name = %s ORDER BY ordinal_position",
        (target,),
    )
    return [str(r[0]) for r in rows]


def test_every_column_of_every_table_arrives(tmp_path: Path, pg_url: str) -> None:
    """Both schemas hold the same columns (a column added to one table definition and not the other fails here),
    and every row arrives with every column's value."""
    data = tmp_path / "data"
    embedded_data(data)
    open_postgres(pg_url).close()
    copy_media(data, pg_url)
    with psycopg.connect(pg_url) as pg:
        for t in TABLES:
            columns = _source_columns(data, t.file, t.name)
            shared = [c for c in columns if c not in GENERATED.get(t.target, set())]
            target = set(_target_columns(pg, t.target)) - FILLED.get(t.target, set())
            assert set(columns) == target, (t.name, t.target)
            with closing(sqlite3.connect(data / t.file)) as src:
                want = Counter(src.execute(f"SELECT {', '.join(shared)} FROM {t.name}"))
            got = Counter(tuple(r) for r in pg.execute(f"SELECT {', '.join(shared)} FROM {t.target}"))
            assert want and got == want, t.target


def test_a_column_added_to_both_tables_is_copied(tmp_path: Path, pg_url: str) -> None:
    data = tmp_path / "data"
    made = embedded_data(data)
    open_postgres(pg_url).close()
    with closing(sqlite3.connect(data / "photos.sqlite3")) as src, src:
        src.execute("ALTER TABLE observations ADD COLUMN note TEXT")
        src.execute("UPDATE observations SET note = 'seen ' || id")
    with psycopg.connect(pg_url) as pg:
        pg.execute("ALTER TABLE observations ADD COLUMN note text")
    copy_media(data, pg_url)
    with psycopg.connect(pg_url) as pg:
        notes: dict[int, str] = dict(pg.execute("SELECT id, note FROM observations").fetchall())
    assert notes == {i: f"seen {i}" for i in made.ids}


def test_a_column_the_target_lacks_stops_the_copy_of_its_table(tmp_path: Path, pg_url: str) -> None:
    data = tmp_path / "data"
    embedded_data(data)
    open_postgres(pg_url).close()
    with closing(sqlite3.connect(data / "streams.db")) as src, src:
        src.execute("ALTER TABLE streams ADD COLUMN zone TEXT")
    with pytest.raises(SchemaMismatch, match="streams has columns zone"):
        copy_media(data, pg_url)
    with psycopg.connect(pg_url) as pg:
        assert pg.execute("SELECT count(*) FROM streams").fetchone() == (0,)  # nothing of it copied without zone


def test_a_target_outside_the_search_path_is_named(tmp_path: Path, pg_url: str) -> None:
    """The target table is found as the INSERT finds it (the search path); missing there, the copy says so."""
    data = tmp_path / "data"
    embedded_data(data)
    open_postgres(pg_url).close()
    with psycopg.connect(pg_url) as pg:
        pg.execute("CREATE SCHEMA IF NOT EXISTS elsewhere")
        pg.execute("ALTER TABLE streams SET SCHEMA elsewhere")
    try:
        with pytest.raises(SchemaMismatch, match="streams is not in the connection's search path"):
            copy_media(data, pg_url)
    finally:
        with psycopg.connect(pg_url) as pg:
            pg.execute("ALTER TABLE elsewhere.streams SET SCHEMA public")
            pg.execute("DROP SCHEMA elsewhere")


def test_an_interrupted_copy_keeps_the_chunks_it_committed(tmp_path: Path, pg_url: str) -> None:
    data = tmp_path / "data"
    embedded_data(data)
    open_postgres(pg_url).close()

    def stop(stage: str, done: int, total: int) -> None:
        if stage == "observations" and done == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        copy_media(data, pg_url, batch=2, progress=stop)
    with psycopg.connect(pg_url) as pg:
        counts = {t: pg.execute(f"SELECT count(*) FROM {t}").fetchone() for t in ("events", "outbox", "observations")}
    assert counts == {"events": (5,), "outbox": (5,), "observations": (2,)}  # every table and chunk before the stop
    assert copy_media(data, pg_url, batch=2)["observations"] == (3, 3)  # and the next run goes on from there
