"""Keep the server's resident memory flat under load: bounded glibc malloc arenas and a periodic ``malloc_trim``.

Why: the server runs model work and gallery reads in many threads (anyio's worker pool, the inference
runner, the micro-batcher, TensorFlow's pools). glibc gives threads their own malloc arenas (up to 8 per
core) and keeps freed memory inside them; TensorFlow's tensor buffers (MiB-sized, freed and re-allocated
every request from whichever thread runs the request) fragment those arenas, so RSS creeps up with the number
of threads that ever ran a request and never comes back (docs/LOAD.md has the measurements). Capping the
arenas (``M_ARENA_MAX``) makes the threads share a few arenas, and ``malloc_trim(0)`` returns their free
pages to the OS.

Only glibc has ``mallopt``/``malloc_trim``; elsewhere (musl, macOS) both calls are no-ops. The settings:
``FACEREC_MALLOC_ARENAS`` (default 2; 0 leaves glibc's default; an explicit ``MALLOC_ARENA_MAX`` in the
environment wins, glibc read it at start-up) and ``FACEREC_MALLOC_TRIM_S`` (default 30 s; 0 disables).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import threading
from functools import cache
from typing import Any

log = logging.getLogger("facerec.service")

M_ARENA_MAX = -8
"""``mallopt`` parameter number of ``M_ARENA_MAX`` in glibc's ``malloc.h``."""


@cache
def _libc() -> Any | None:
    """glibc, or None where ``mallopt``/``malloc_trim`` do not exist."""
    name = ctypes.util.find_library("c") or "libc.so.6"
    try:
        libc = ctypes.CDLL(name)
        libc.mallopt.argtypes, libc.mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
        libc.malloc_trim.argtypes, libc.malloc_trim.restype = [ctypes.c_size_t], ctypes.c_int
    except (OSError, AttributeError):
        return None
    return libc


def limit_arenas(arenas: int) -> bool:
    """Cap glibc's malloc arenas for threads created from now on; True if applied. Call it before the
    threads exist (at the start of ``facerec serve``). ``MALLOC_ARENA_MAX`` in the environment wins."""
    libc = _libc()
    if arenas <= 0 or libc is None or os.environ.get("MALLOC_ARENA_MAX"):
        return False
    return bool(libc.mallopt(M_ARENA_MAX, arenas))


def trim() -> bool:
    """``malloc_trim(0)``: give free memory inside every arena back to the OS; True if some was released."""
    libc = _libc()
    return bool(libc.malloc_trim(0)) if libc is not None else False


class Trimmer:
    """A daemon thread calling :func:`trim` every ``interval_s`` seconds until :meth:`stop`."""

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self.runs = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="malloc-trim", daemon=True)

    def start(self) -> Trimmer:
        if self.interval_s > 0 and _libc() is not None:
            self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                trim()
                self.runs += 1
            except Exception:  # never let housekeeping take the server down
                log.exception("malloc_trim failed")
                return

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)


def configure_from_env() -> Trimmer:
    """What ``facerec serve`` calls first: cap the arenas and start the trimmer from the environment."""
    arenas = int(os.environ.get("FACEREC_MALLOC_ARENAS", "2"))
    interval = float(os.environ.get("FACEREC_MALLOC_TRIM_S", "30"))
    applied = limit_arenas(arenas)
    log.info("malloc: arenas capped at %s, trim every %.0f s", arenas if applied else "default", interval)
    return Trimmer(interval).start()
