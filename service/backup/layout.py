"""What a data dir holds, for a backup: its SQLite databases (found by their file header, so a new store's file
is never left out), the append-only audit log, the files to copy as they are (video uploads, anything unknown),
and what is left out because it is rebuilt or belongs to a running process (index snapshots, lock files, SQLite's
``-wal``/``-shm`` side files, earlier backups kept inside the data dir, a development PostgreSQL cluster); and
what of ``FACEREC_CACHE`` a data dir needs (:func:`cache_files`)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from embeddings.training.model_dir import CARD_FILE, WEIGHTS_FILE, models_dir, valid_model_id
from embeddings.weights import MODEL_ID as PRETRAINED_ID
from service.audit import AUDIT_FILE
from service.bootstrap import REINDEX_LOCK
from service.gallery.calibration import TABLES_SUFFIX, user_tables_dir
from service.gallery.lock import LOCK_NAME
from service.gallery.normalisation import SUFFIX as COHORT_SUFFIX
from service.gallery.snapshot import SNAP_DIR as GALLERY_SNAPSHOTS
from service.photos.index import SNAP_DIR as PHOTO_SNAPSHOTS

Kind = Literal["sqlite", "audit", "file"]

BOOTSTRAP_KEY_FILE = "bootstrap-admin-key"
"""Where the container's first start writes the first admin key's token (``docker/entrypoint.sh``, at
``FACEREC_BOOTSTRAP_ADMIN_KEY_FILE``: ``/data/bootstrap-admin-key`` in docker-compose.yml)."""
BOOTSTRAP_KEY_ENV = "FACEREC_BOOTSTRAP_ADMIN_KEY_FILE"

MANIFEST = "manifest.json"
"""The file that makes a folder a facerec backup."""
PARTIAL_PREFIX = ".facerec-partial-"
"""Name prefix of a backup or restore being written (renamed into place, or removed, when it ends)."""
SQLITE_MAGIC = b"SQLite format 3\x00"
SQLITE_SIDE_FILES = ("-wal", "-shm", "-journal")
REBUILT = {
    GALLERY_SNAPSHOTS: "gallery index snapshots, rebuilt from gallery.sqlite3 on start",
    PHOTO_SNAPSHOTS: "photo library index snapshots, rebuilt from photos.sqlite3 on start",
}
"""Folders of the data dir that are caches of a database, with why they need no backup."""
PROCESS_FILES = {
    LOCK_NAME: "the running server's lock",
    REINDEX_LOCK: "the re-index lock",
}
SECRET = "a plaintext API token: its key is in keys.db; keep the token elsewhere and delete the file"
"""Files of the data dir left out, with why: a running process's, or a secret no backup should carry."""


CACHE_FOLDER = "FACEREC_CACHE"
"""The folder of a backup that holds the files of ``FACEREC_CACHE`` it carries, at their paths in the cache."""
MODELS, CALIBRATION = models_dir(Path()).as_posix(), user_tables_dir(Path()).as_posix()


def cache_files(model_id: str) -> list[str]:
    """What a backup carries of ``FACEREC_CACHE`` for a model the data dir uses, where it exists (paths in the
    cache, ``/``-separated): a fine-tuned model's directory (``facerec train``) and the model's calibration
    tables and cohort (``facerec calibrate``). Not the pretrained weights (``facerec weights fetch`` gets them
    again, sha256-checked) nor what is rebuilt from weights (converted encoders, compile caches)."""
    tables = [f"{CALIBRATION}/{model_id}{TABLES_SUFFIX}", f"{CALIBRATION}/{model_id}{COHORT_SUFFIX}"]
    if model_id == PRETRAINED_ID:
        return tables
    return [f"{MODELS}/{model_id}/{WEIGHTS_FILE}", f"{MODELS}/{model_id}/{CARD_FILE}", *tables]


def is_cache_file(rel: str) -> bool:
    """Whether ``rel`` is a path :func:`cache_files` gives for some valid model id (what a manifest may name)."""
    parts = rel.split("/") if isinstance(rel, str) else []
    if len(parts) == 3 and parts[0] == MODELS:
        model_id = parts[1]
    elif len(parts) == 2 and parts[0] == CALIBRATION:
        model_id = parts[1].removesuffix(COHORT_SUFFIX).removesuffix(TABLES_SUFFIX)
    else:
        return False
    return valid_model_id(model_id) and rel in cache_files(model_id)


@dataclass(frozen=True)
class Entry:
    """One file to back up: ``path`` relative to the data dir (``/``-separated), and how it is copied."""

    path: str
    kind: Kind


def is_sqlite(path: Path) -> bool:
    """Whether ``path`` is a regular file that starts with SQLite's header."""
    try:
        with open(path, "rb") as f:
            return f.read(len(SQLITE_MAGIC)) == SQLITE_MAGIC
    except OSError:
        return False


def _skip_dir(path: Path, *, top: bool) -> str | None:
    """Why a folder of the data dir (``top``: directly in it) is left out, or None to descend into it."""
    if top and path.name in REBUILT:
        return REBUILT[path.name]
    if path.name.startswith(PARTIAL_PREFIX):
        return "a backup or restore being written"
    if (path / MANIFEST).is_file():
        return "a facerec backup"
    if (path / "PG_VERSION").is_file():
        return "a PostgreSQL cluster (back it up with pg_dump)"
    return None


def _is_bootstrap_token(path: Path) -> bool:
    """The container's bootstrap token file (its usual name, the one ``FACEREC_BOOTSTRAP_ADMIN_KEY_FILE`` names,
    or the entrypoint's temporary file for it)."""
    named = os.environ.get(BOOTSTRAP_KEY_ENV, "")
    if named not in ("", "-") and Path(named).resolve() == path.resolve():
        return True
    return path.name == BOOTSTRAP_KEY_FILE or path.name.startswith(f".{BOOTSTRAP_KEY_FILE}.")


def scan(data: Path, *, exclude: dict[Path, str] | None = None) -> tuple[list[Entry], dict[str, str]]:
    """The files of ``data`` to back up (sorted by path) and what was left out (path -> why). ``exclude``:
    folders never entered, with why (the backup being written or ``FACEREC_CACHE``, inside the data dir)."""
    entries: list[Entry] = []
    skipped: dict[str, str] = {}
    excluded = {p.resolve(): why for p, why in (exclude or {}).items()}
    for path in _walk(data, data, excluded, skipped):
        rel = path.relative_to(data).as_posix()
        if rel in PROCESS_FILES:
            skipped[rel] = PROCESS_FILES[rel]
        elif _is_bootstrap_token(path):
            skipped[rel] = SECRET
        elif rel == AUDIT_FILE:
            entries.append(Entry(rel, "audit"))
        elif is_sqlite(path):
            entries.append(Entry(rel, "sqlite"))
        else:
            entries.append(Entry(rel, "file"))
    sqlite = {e.path for e in entries if e.kind == "sqlite"}
    kept = []
    for e in entries:
        side = next((s for s in SQLITE_SIDE_FILES if e.path.endswith(s) and e.path[: -len(s)] in sqlite), None)
        if side is None:
            kept.append(e)
        else:
            skipped[e.path] = "part of its database, copied through SQLite's backup API"
    return sorted(kept, key=lambda e: e.path), skipped


def _walk(root: Path, folder: Path, excluded: dict[Path, str], skipped: dict[str, str]) -> Iterator[Path]:
    """Regular files under ``folder``, folders that :func:`_skip_dir` names left out (symbolic links too)."""
    with os.scandir(folder) as it:
        children = sorted(it, key=lambda d: d.name)
    for child in children:
        path = Path(child.path)
        rel = path.relative_to(root).as_posix()
        if child.is_symlink():
            skipped[rel] = "a symbolic link"
        elif child.is_dir():
            why = excluded.get(path.resolve()) or _skip_dir(path, top=folder == root)
            if why is None:
                yield from _walk(root, path, excluded, skipped)
            else:
                skipped[rel + "/"] = why
        elif child.is_file():
            yield path
        else:
            skipped[rel] = "not a regular file"
