"""An exclusive lock on a data dir (``fcntl.flock`` on ``<data>/LOCK``) so a second process cannot open it."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from service.gallery.errors import GalleryLocked

LOCK_NAME = "LOCK"


class DataDirLock:
    """Held from :meth:`acquire` until :meth:`release` (or process death: the kernel drops flock locks).

    The lock file records the holder's pid, so the error can say who holds it.
    """

    def __init__(self, data_dir: Path) -> None:
        self.path = Path(data_dir) / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock or raise :class:`GalleryLocked` at once (never waits)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise GalleryLocked(
                f"the gallery data dir {self.path.parent} is in use by another process (pid {holder}); "
                "stop it or use another FACEREC_DATA"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    @property
    def held(self) -> bool:
        return self._fd is not None
