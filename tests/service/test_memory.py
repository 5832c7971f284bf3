"""service/memory.py: the glibc arena cap and the periodic malloc_trim that keep the server's RSS flat."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import time

import pytest

from service import memory
from service.config import Settings

glibc = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt/malloc_trim are glibc's")


@glibc
def test_trim_releases_freed_memory_to_the_os() -> None:
    """Many small blocks freed in a non-main thread's arena stay resident until malloc_trim(0) returns them."""
    code = r"""
import ctypes, threading
from service import memory
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
def rss():
    return int(next(l for l in open("/proc/self/status") if l.startswith("VmRSS")).split()[1]) // 1024
def churn():
    blocks = [libc.malloc(4000) for _ in range(50_000)]
    for b in blocks:
        ctypes.memset(b, 1, 4000)
    keep = blocks[-1]
    for b in blocks[:-1]:
        libc.free(b)
t = threading.Thread(target=churn); t.start(); t.join()
before = rss()
released = memory.trim()
print(before, rss(), released)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    before, after, released = out.stdout.split()
    assert released == "True"
    assert int(before) - int(after) > 100  # ~190 MiB was touched and freed inside the arena


@glibc
def test_limit_arenas_applies_unless_the_environment_sets_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    assert memory.limit_arenas(0) is False  # 0 = leave glibc's default
    assert memory.limit_arenas(64) is True  # (a generous cap: this test process keeps working normally)
    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")
    assert memory.limit_arenas(2) is False


def test_trimmer_runs_periodically_and_stops() -> None:
    trimmer = memory.Trimmer(0.01).start()
    deadline = time.monotonic() + 5
    while trimmer.runs < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    trimmer.stop()
    if platform.libc_ver()[0] == "glibc":
        assert trimmer.runs >= 3
    runs = trimmer.runs
    time.sleep(0.05)
    assert trimmer.runs == runs  # stopped
    assert memory.Trimmer(0).start().runs == 0  # 0 disables


def test_trimmer_keeps_running_after_a_failed_trim(monkeypatch: pytest.MonkeyPatch) -> None:
    if memory._libc() is None:
        pytest.skip("no glibc: no trimmer thread")
    calls: list[int] = []

    def flaky() -> bool:
        calls.append(1)
        if len(calls) == 1:
            raise OSError("transient")
        return True

    monkeypatch.setattr(memory, "trim", flaky)
    trimmer = memory.Trimmer(0.01).start()
    try:
        deadline = time.monotonic() + 5
        while trimmer.runs < 2:
            assert time.monotonic() < deadline, "the trimmer stopped after one failed trim"
            time.sleep(0.01)
    finally:
        trimmer.stop()


def test_configure_from_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FACEREC_MALLOC_ARENAS", "0")
    monkeypatch.setenv("FACEREC_MALLOC_TRIM_S", "0")
    settings = Settings()
    assert (settings.malloc_arenas, settings.malloc_trim_s, settings.malloc_mmap_threshold_kib) == (0, 0.0, 0)
    trimmer = memory.configure(arenas=settings.malloc_arenas, interval=settings.malloc_trim_s, mmap_kib=0)
    assert trimmer.interval_s == 0 and not trimmer._thread.is_alive()
    trimmer.stop()


@glibc
@pytest.mark.parametrize("fixed", [False, True])
def test_fixed_mmap_threshold_keeps_large_blocks_out_of_the_arenas(fixed: bool) -> None:
    """glibc raises its mmap threshold when an mmapped block is freed, so the next 1 MiB block comes from an arena
    (and stays resident there); with the threshold fixed it is mmapped again and unmapped on free."""
    code = rf"""
import ctypes
from service import memory
if {fixed}:
    assert memory.fix_mmap_threshold(256)
class MI(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks "
                                              "fordblks keepcost").split()]
libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MI
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
libc.free(libc.malloc(1 << 20))  # the first 1 MiB block is mmapped either way; freeing it moves a dynamic threshold
before = libc.mallinfo2().hblkhd
block = libc.malloc(1 << 20)
print(libc.mallinfo2().hblkhd - before >= 1 << 20)
libc.free(block)
"""
    env = {k: v for k, v in os.environ.items() if k not in ("MALLOC_MMAP_THRESHOLD_", "GLIBC_TUNABLES")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60, env=env)
    assert out.stdout.split() == [str(fixed)]


@glibc
def test_fix_mmap_threshold_yields_to_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_", raising=False)
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.mmap_threshold=131072")
    assert memory.fix_mmap_threshold(256) is False
    assert memory.fix_mmap_threshold(0) is False  # 0 = leave glibc's dynamic threshold
    # another tunable does not count (in a child: a fixed threshold would stay for the rest of this process)
    env = {**os.environ, "GLIBC_TUNABLES": "glibc.malloc.tcache_count=7"}
    code = "from service import memory; print(memory.fix_mmap_threshold(256))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60, env=env)
    assert out.stdout.split() == ["True"]
