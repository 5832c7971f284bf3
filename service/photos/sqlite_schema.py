"""The tables of ``photos.sqlite3`` (:class:`service.photos.sqlite.SQLitePhotoStore`), created if missing.

``observations``: one row per face of an indexed photo (embedding: 512-byte float32 blob; ``score``: display
order, :func:`service.photos.sqlite.quality_score`); exactly one of ``subject_id`` / ``cluster_id`` is set.
``cannot_link``: "not this person" constraints (pairs ``a < b``), dropped with either face. ``namings``: cluster
namings in progress (:class:`service.photos.types.Naming`). ``counters``: the next cluster id and a change
counter for the background re-clustering.
"""

SCHEMA = """
CREATE TABLE IF NOT EXISTS photos (
    id TEXT PRIMARY KEY,
    sha256 TEXT NOT NULL UNIQUE,
    external_id TEXT,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS observations (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    photo_id TEXT NOT NULL REFERENCES photos(id) ON DELETE CASCADE,
    model_id TEXT NOT NULL,
    embedding BLOB NOT NULL,
    box TEXT NOT NULL,
    quality TEXT NOT NULL,
    score REAL NOT NULL,
    crop BLOB,
    subject_id TEXT,
    distance REAL,
    cluster_id INTEGER,
    face_id INTEGER,
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS obs_photo ON observations(photo_id);
CREATE INDEX IF NOT EXISTS obs_subject ON observations(subject_id) WHERE subject_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS obs_cluster ON observations(cluster_id) WHERE cluster_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS obs_unnamed_time ON observations(created_at) WHERE subject_id IS NULL;
CREATE TABLE IF NOT EXISTS cannot_link (a INTEGER NOT NULL, b INTEGER NOT NULL, PRIMARY KEY (a, b)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS cannot_link_b ON cannot_link(b);
CREATE TRIGGER IF NOT EXISTS obs_erased AFTER DELETE ON observations BEGIN
    DELETE FROM cannot_link WHERE a = old.id OR b = old.id;
END;
CREATE TABLE IF NOT EXISTS namings (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    cluster_id INTEGER NOT NULL,
    faces TEXT NOT NULL,
    enrol TEXT NOT NULL,
    subject_id TEXT,
    name TEXT,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT OR IGNORE INTO counters VALUES ('cluster', 0), ('changes', 0);
"""
