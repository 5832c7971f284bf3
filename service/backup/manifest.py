"""A backup's ``manifest.json``: what it holds and how to check it.

Format (``format_version`` 2)::

    {"format": "facerec-backup", "format_version": 2, "facerec_version": "0.1.0", "model": "<FACEREC_MODEL>",
     "models": {"<model id>": <faces>}, "created_at": "<ISO 8601 UTC>", "source": "<data dir>",
     "counts": {"subjects": n, "faces": n, "keys": n, "audit_records": n},
     "files": [{"path": "gallery.sqlite3", "kind": "sqlite", "size": <bytes>, "sha256": "<hex>",
                "tables": {"subjects": n, ...}}, {"path": "audit.log", "kind": "audit", ...}, ...],
     "cache": [{"path": "models/<model id>/card.json", "kind": "file", "size": <bytes>, "sha256": "<hex>"}, ...],
     "skipped": {"index/": "<why>", ...}}

A ``files`` path is relative to the backup and to the data dir (``/``-separated); a ``cache`` path is relative to
``FACEREC_CACHE`` (:func:`layout.cache_files`), its file in the backup under ``FACEREC_CACHE/``. Version 1 (no
``cache``) is read as well. Sizes are bytes; the checksums detect damage (a truncated or altered file), not a
deliberate forgery of file and manifest together.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path, PurePosixPath

from service.backup.errors import BackupRefused
from service.backup.layout import CACHE_FOLDER, MANIFEST, Kind, is_cache_file

FORMAT = "facerec-backup"
FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)
"""Versions :meth:`Manifest.read` reads: 1 is a backup without the ``cache`` files."""
_BLOCK = 1 << 20


def facerec_version() -> str:
    """The installed facerec's version, or ``unknown`` when running from a source tree without metadata."""
    try:
        return version("facerec")
    except PackageNotFoundError:
        return "unknown"


def sha256_file(path: Path) -> tuple[int, str]:
    """``(size in bytes, sha256 hex)`` of a file, read in 1 MiB blocks."""
    digest, size = hashlib.sha256(), 0
    with open(path, "rb") as f:
        while block := f.read(_BLOCK):
            digest.update(block)
            size += len(block)
    return size, digest.hexdigest()


@dataclass
class FileRecord:
    """One file of the backup: ``size`` bytes, ``sha256``; ``tables`` (name -> rows) for a database, ``records``
    (lines) for the audit log."""

    path: str
    kind: Kind
    size: int
    sha256: str
    tables: dict[str, int] | None = None
    records: int | None = None


@dataclass
class Manifest:
    """The contents of ``manifest.json`` (see the module doc)."""

    created_at: str
    source: str
    model: str
    models: dict[str, int] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    files: list[FileRecord] = field(default_factory=list)
    cache: list[FileRecord] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    facerec_version: str = field(default_factory=facerec_version)
    format: str = FORMAT
    format_version: int = FORMAT_VERSION

    def to_json(self) -> str:
        out = asdict(self)
        for key in ("files", "cache"):
            out[key] = [{k: v for k, v in f.items() if v is not None} for f in out[key]]
        head = {"format": self.format, "format_version": self.format_version}
        text = json.dumps({**head, **out}, indent=2, ensure_ascii=False) + "\n"
        # a file name that is not UTF-8 (Python holds its bytes as lone surrogates) is written as a JSON escape,
        # \udcXX, which reads back as the same name: the manifest stays UTF-8 and the restore finds the file
        return text.encode("utf-8", "backslashreplace").decode("utf-8")

    @classmethod
    def read(cls, folder: Path) -> Manifest:
        """The manifest of the backup in ``folder``; :class:`BackupRefused` when there is none or it is not one
        this version can read."""
        path = folder / MANIFEST
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise BackupRefused(f"{folder} is not a facerec backup (no {MANIFEST})") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise BackupRefused(f"{path} cannot be read: {exc}") from None
        if not isinstance(raw, dict) or raw.get("format") != FORMAT:
            raise BackupRefused(f"{path} is not a facerec backup manifest")
        if raw.get("format_version") not in READABLE_VERSIONS:
            readable = " and ".join(map(str, READABLE_VERSIONS))
            raise BackupRefused(
                f"{path} has format version {raw.get('format_version')!r}; this facerec reads {readable}"
            )
        try:
            files = [FileRecord(**f) for f in raw.pop("files")]
            cache = [FileRecord(**f) for f in raw.pop("cache", [])]
            manifest = cls(**raw, files=files, cache=cache)
        except (KeyError, TypeError) as exc:
            raise BackupRefused(f"{path} is damaged: {exc}") from None
        for f in manifest.files:
            _check_path(f.path, path)
        for f in manifest.cache:
            if not is_cache_file(f.path):
                raise BackupRefused(f"{path} is damaged: it names the cache file {f.path!r}")
        return manifest


def _check_path(rel: str, manifest: Path) -> None:
    """A data dir path of a manifest must stay inside the backup and the data dir: relative, no ``..``, not the
    manifest, not under the backup's ``FACEREC_CACHE/``."""
    parts = PurePosixPath(rel).parts if isinstance(rel, str) else ()
    if not parts or rel.startswith("/") or ".." in parts or rel == MANIFEST or parts[0] == CACHE_FOLDER:
        raise BackupRefused(f"{manifest} is damaged: it names the file {rel!r}")
