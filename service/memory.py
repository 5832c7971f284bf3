"""Keep the server's resident memory flat under load: bounded glibc malloc arenas and a periodic ``malloc_trim``.

Why: the server runs model work and gallery reads in many threads (anyio's worker pool, the inference
runner, the micro-batcher, TensorFlow's pools). glibc gives threads their own malloc arenas (up to 8 per
core) and keeps freed memory inside them; TensorFlow's tensor buffers (MiB-sized, freed and re-allocated
every request from whichever thread runs the request) fragment those arenas, so RSS creeps up with the number
of threads that ever ran a request and never comes back (docs/LOAD.md has the measurements). Capping the
arenas (``M_ARENA_MAX``) makes the threads share a few arenas, and ``malloc_trim(0)`` returns their free
pages to the OS.

An optional fixed mmap threshold (off by default): glibc serves blocks above ``M_MMAP_THRESHOLD`` (128 KiB at
start) with their own ``mmap`` and unmaps them on free, but every such free *raises* the threshold to the freed
size (up to 32 MiB), so the MiB-sized tensor and batch buffers soon come from the arenas instead, where they can
fragment the heap between trims. Setting the threshold turns that adjustment off. At 256 KiB it costs ~20x the
minor page faults and ~6% more CPU per request, with no reproducible RSS benefit under load (docs/LOAD.md), so it is
off by default.

Only glibc has ``mallopt``/``malloc_trim``; elsewhere (musl, macOS) the calls are no-ops. The settings (read
by :class:`service.config.Settings`):
``FACEREC_MALLOC_ARENAS`` (default 2; 0 leaves glibc's default; an explicit ``MALLOC_ARENA_MAX`` in the
environment wins, glibc read it at start-up), ``FACEREC_MALLOC_TRIM_S`` (default 30 s; 0 disables) and
``FACEREC_MALLOC_MMAP_THRESHOLD_KIB`` (default 0: glibc's dynamic threshold; an explicit
``MALLOC_MMAP_THRESHOLD_`` or ``glibc.malloc.mmap_threshold`` in ``GLIBC_TUNABLES`` wins).
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

M_MMAP_THRESHOLD = -3
"""``mallopt`` parameter number of ``M_MMAP_THRESHOLD`` in glibc's ``malloc.h``."""


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


def fix_mmap_threshold(kib: int) -> bool:
    """Serve every block of ``kib`` KiB or more with its own ``mmap`` (returned to the OS on free) and stop glibc
    from raising that threshold as blocks are freed; True if applied. 0 leaves glibc's dynamic threshold, and so does a
    threshold set in the environment (``MALLOC_MMAP_THRESHOLD_``, ``GLIBC_TUNABLES``: glibc read it at start-up)."""
    libc = _libc()
    from_env = os.environ.get("MALLOC_MMAP_THRESHOLD_") or "mmap_threshold" in os.environ.get("GLIBC_TUNABLES", "")
    if kib <= 0 or libc is None or from_env:
        return False
    return bool(libc.mallopt(M_MMAP_THRESHOLD, kib * 1024))


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
            except Exception:  # never let housekeeping take the server down, nor stop for good
                log.exception("malloc_trim failed; trying again in %.0f s", self.interval_s)

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)


def configure(*, arenas: int, interval: float, mmap_kib: int) -> Trimmer:
    """What ``facerec serve`` calls before any thread exists: cap the arenas at ``arenas``, fix the mmap
    threshold at ``mmap_kib`` KiB (0: glibc's) and start a trimmer every ``interval`` s (0: none)."""
    applied = limit_arenas(arenas)
    fixed = fix_mmap_threshold(mmap_kib)
    log.info(
        "malloc: arenas capped at %s, mmap threshold %s, trim every %.0f s",
        arenas if applied else "default",
        f"{mmap_kib} KiB" if fixed else "glibc's",
        interval,
    )
    return Trimmer(interval).start()
