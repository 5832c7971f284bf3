"""File handling shared by backup and restore: private modes (folders ``DATA_DIR_MODE`` 0700, files 0600),
copies checksummed as they are written, SQLite checks, and :class:`Staging`, which writes a backup or a restored
data dir aside and puts it in place only when it is complete."""

from __future__ import annotations

import hashlib
import os
import shutil
import sqlite3
from contextlib import closing
from pathlib import Path

from service.backup.errors import BackupFailed, BackupRefused
from service.backup.layout import PARTIAL_PREFIX
from service.config import DATA_DIR_MODE

FILE_MODE = 0o600
"""Mode of every file a backup or restore writes: biometric data, key digests, the audit log."""
_BLOCK = 1 << 20
STAGING_NAME_CHARS = 48
"""At most this much of the target's name is in its staging folder's (4 bytes a character in UTF-8, at most)."""


def require_empty(path: Path, what: str, *, hint: str = "give an empty or new folder") -> None:
    """:class:`BackupRefused` unless ``path`` does not exist or is an empty folder (nothing is ever overwritten)."""
    if path.is_symlink() or (path.exists() and not path.is_dir()):
        raise BackupRefused(f"{what} {path} exists and is not a folder")
    try:
        entries = sorted(os.listdir(path)) if path.exists() else []
    except OSError as exc:
        raise BackupRefused(f"{what} {path} cannot be read: {exc.strerror or exc}") from None
    if entries:
        shown = ", ".join(entries[:3]) + (", ..." if len(entries) > 3 else "")
        raise BackupRefused(f"{what} {path} is not empty ({shown}); {hint}")


def private_dir(path: Path) -> None:
    """Make the new folder ``path`` (it must not exist; missing parents too) with mode 0700, whatever the umask."""
    path.mkdir(mode=DATA_DIR_MODE, parents=True)
    os.chmod(path, DATA_DIR_MODE)


def _write_all(fd: int, data: bytes) -> None:
    """Write all of ``data`` to ``fd`` (``os.write`` may write less than it is given)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def write_private(path: Path, data: bytes) -> tuple[int, str]:
    """Create ``path`` (it must not exist) with mode 0600, write ``data`` and fsync it; ``(size, sha256 hex)``."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    try:
        _write_all(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.chmod(path, FILE_MODE)
    return len(data), hashlib.sha256(data).hexdigest()


def copy_private(src: Path, dst: Path) -> tuple[int, str]:
    """Copy ``src`` to a new 0600 file ``dst`` (fsynced), hashing what was written: ``(size, sha256 hex)``."""
    digest, size = hashlib.sha256(), 0
    fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    try:
        with open(src, "rb") as f:
            while block := f.read(_BLOCK):
                digest.update(block)
                size += len(block)
                _write_all(fd, block)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.chmod(dst, FILE_MODE)
    return size, digest.hexdigest()


def fsync_dir(path: Path) -> None:
    """Make the names in ``path`` (a rename, new files) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def check_database(path: Path) -> dict[str, int]:
    """``PRAGMA integrity_check`` of the SQLite file ``path`` (:class:`BackupFailed` unless ``ok``), then its
    tables' row counts (name -> rows). Reads only (the connection's ``-wal``/``-shm`` go when it closes)."""
    try:
        with closing(sqlite3.connect(path, timeout=30.0)) as conn:
            problems = [row[0] for row in conn.execute("PRAGMA integrity_check").fetchall()]
            if problems != ["ok"]:
                raise BackupFailed(f"{path.name} fails SQLite's integrity check: {'; '.join(problems[:3])}")
            return table_counts(conn)
    except sqlite3.Error as exc:
        raise BackupFailed(f"{path.name} cannot be checked: {exc}") from exc


TABLES_SQL = "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\'"


def table_counts(conn: sqlite3.Connection) -> dict[str, int]:
    """Rows of every table of ``conn`` (SQLite's own ``sqlite_*`` tables left out), by name."""
    names = sorted(str(r[0]) for r in conn.execute(TABLES_SQL))
    return {
        n: int(conn.execute(f'SELECT count(*) FROM "{n.replace(chr(34), chr(34) * 2)}"').fetchone()[0]) for n in names
    }


def _alive(pid: int) -> bool:
    """Whether a process ``pid`` exists (it may be another program that reuses the number: then it counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def partial_path(parent: Path, target: Path) -> Path:
    """The folder in ``parent`` (the target itself, or the folder beside it) that this process writes ``target``
    into before it is complete: ``.facerec-partial-<the target's name, cut short>-<pid>``."""
    # the target's name cut short: a name near the limit (255 bytes) must still leave room for the rest
    return parent / f"{PARTIAL_PREFIX}{target.name[:STAGING_NAME_CHARS]}-{os.getpid()}"


MOVING = ".facerec-moving"
"""In a staging folder inside its target: the names it moves up into the target, in order, NUL-separated."""


def _take_back(stage: Path, target: Path) -> list[Path]:
    """The entries a killed :meth:`Staging.finish` had moved from ``stage`` into ``target``, removed, unless it
    moved them all (the last one listed is in place: the target is complete and stays); those removed."""
    try:
        names = [os.fsdecode(n) for n in (stage / MOVING).read_bytes().split(b"\0")]
    except FileNotFoundError:
        return []
    moved = [n for n in names if n and "/" not in n and n not in (".", "..") and not os.path.lexists(stage / n)]
    if not names or names[-1] in moved:
        return []
    removed = []
    for name in moved:
        path = target / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif os.path.lexists(path):
            path.unlink()
        else:
            continue
        removed.append(path)
    return removed


def remove_interrupted(target: Path) -> list[Path]:
    """Remove what an interrupted backup or restore into ``target`` left (killed before it could clean up: its
    staging folder, with copies of biometric data, inside ``target`` or beside it, and inside it what it had
    begun to move up), when the process that made it is gone; what was removed."""
    stem = f"{PARTIAL_PREFIX}{target.name[:STAGING_NAME_CHARS]}-"
    removed = []
    for parent in (target, target.parent):
        if parent.is_symlink() or not parent.is_dir():
            continue
        for entry in os.scandir(parent):
            pid = entry.name.removeprefix(stem)
            ours = entry.name.startswith(stem) and pid.isdigit() and entry.is_dir(follow_symlinks=False)
            if ours and not _alive(int(pid)):
                if parent == target:
                    removed += _take_back(Path(entry.path), target)
                shutil.rmtree(entry.path)
                removed.append(Path(entry.path))
    return removed


def must_stage_inside(target: Path) -> bool:
    """Whether a backup or restore into the existing folder ``target`` has to be written inside it rather than
    beside it: a mount point (a volume) cannot be renamed over and nothing beside it is on its file system, and
    a parent this user cannot write has no room beside it."""
    if not target.is_dir():
        return False
    parent = target.absolute().parent
    beside = parent.stat().st_dev == target.stat().st_dev and os.access(parent, os.W_OK | os.X_OK)
    return os.path.ismount(target) or not beside


class Staging:
    """Where a backup or a restored data dir is written before it is complete: a sibling folder of ``target``
    renamed to it at :meth:`finish` (one atomic rename, onto an absent ``target`` or an existing empty folder),
    so a crash leaves the target as it was or complete. Where that cannot be (:func:`must_stage_inside`: a
    volume's mount point): a hidden folder inside the target whose entries are moved up at :meth:`finish`,
    ``last`` moved last (the manifest of a backup, so a crash never leaves a folder that looks like a complete
    backup), the names listed first (:data:`MOVING`) so that what a killed move left is taken out again by
    :func:`remove_interrupted` or :meth:`abort`. :meth:`abort` removes what was written."""

    def __init__(self, target: Path, *, last: str) -> None:
        self.target = target
        self.last = last
        self.in_place = must_stage_inside(target)
        if not target.exists():  # missing parents are made private; an existing one keeps its mode
            target.parent.mkdir(mode=DATA_DIR_MODE, parents=True, exist_ok=True)
        self.path = partial_path(target if self.in_place else target.parent, target)
        private_dir(self.path)

    def finish(self) -> None:
        """Put the staged files in place (see the class doc), the target's mode 0700, every name fsynced."""
        if not self.in_place:  # rename(2) replaces an empty folder
            fsync_dir(self.path)
            os.rename(self.path, self.target)
            fsync_dir(self.target.parent)
            return
        names = sorted(os.listdir(self.path), key=lambda n: (n == self.last, n))
        write_private(self.path / MOVING, b"\0".join(os.fsencode(n) for n in names))
        fsync_dir(self.path)
        for name in names:
            os.rename(self.path / name, self.target / name)
        os.chmod(self.target, DATA_DIR_MODE)
        fsync_dir(self.target)
        os.unlink(self.path / MOVING)
        os.rmdir(self.path)

    def abort(self) -> None:
        if self.in_place:
            _take_back(self.path, self.target)
        shutil.rmtree(self.path, ignore_errors=True)
