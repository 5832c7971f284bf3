"""SQLite and OS errors of a failed write -> :class:`StorageFull` / :class:`StorageUnavailable`.

SQLite reports a full disk as ``SQLITE_FULL`` ("database or disk is full"), a read-only file or file system as
``SQLITE_READONLY`` and a failing device as ``SQLITE_IOERR``; the OS as ``ENOSPC``/``EROFS``/``EIO``. Anything
else (a constraint violation, a bug) is not a storage failure and passes unchanged.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import sqlite3
from collections.abc import Iterator

from service.gallery.errors import StorageError, StorageFull, StorageUnavailable

log = logging.getLogger("facerec.gallery")

_FULL_SQLITE = {sqlite3.SQLITE_FULL}
_UNAVAILABLE_SQLITE = {
    sqlite3.SQLITE_READONLY,
    sqlite3.SQLITE_IOERR,
    sqlite3.SQLITE_CANTOPEN,
    sqlite3.SQLITE_PERM,
    sqlite3.SQLITE_BUSY,
    sqlite3.SQLITE_LOCKED,
    sqlite3.SQLITE_PROTOCOL,
}
_FULL_ERRNO = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
_UNAVAILABLE_ERRNO = {errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO}
_FULL_MSG = "{what} is full; nothing was stored. Free disk space, then retry"
_UNAVAILABLE_MSG = "{what} refuses writes ({why}); nothing was stored. Reads still work"
GALLERY = "the gallery's storage"


def storage_error(exc: BaseException, what: str = GALLERY) -> StorageError | None:
    """The :class:`StorageError` for a failed write's SQLite or OS error, or ``None`` if it is something else;
    ``what`` names the storage in the message."""
    if isinstance(exc, StorageError):
        return exc
    if isinstance(exc, sqlite3.Error):
        code = getattr(exc, "sqlite_errorcode", None)
        primary = code & 0xFF if isinstance(code, int) else None
        text = str(exc).lower()
        if primary in _FULL_SQLITE or (primary is None and "disk is full" in text):
            return StorageFull(_FULL_MSG.format(what=what))
        if primary in _UNAVAILABLE_SQLITE or (
            primary is None and any(w in text for w in ("readonly", "read-only", "disk i/o error", "locked"))
        ):
            name = getattr(exc, "sqlite_errorname", None) or text
            return StorageUnavailable(_UNAVAILABLE_MSG.format(what=what, why=name))
        return None
    if isinstance(exc, OSError):
        if exc.errno in _FULL_ERRNO:
            return StorageFull(_FULL_MSG.format(what=what))
        if exc.errno in _UNAVAILABLE_ERRNO:
            why = errno.errorcode.get(exc.errno or 0, "OSError")
            return StorageUnavailable(_UNAVAILABLE_MSG.format(what=what, why=why))
    return None


@contextlib.contextmanager
def storage_errors(what: str = GALLERY) -> Iterator[None]:
    """Re-raise a storage failure (full, read-only, I/O) of the block as :class:`StorageFull` or
    :class:`StorageUnavailable` (``what`` names the storage); every other exception passes unchanged."""
    try:
        yield
    except (sqlite3.Error, OSError) as e:
        err = storage_error(e, what)
        if err is None or err is e:
            raise
        log.error("%s: write refused: %s", what, e)
        raise err from e
