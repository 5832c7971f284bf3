"""A restore (or backup) appears whole or not at all: it is written into a sibling folder renamed onto the target
at the end, an existing empty folder included, so a restore killed half-way leaves the target empty and the next
run succeeds. A volume's mount point, which cannot be renamed over, is filled from a folder inside it."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.backup.helpers import register, run_cli

REPO = Path(__file__).resolve().parents[2]

DIE = """
import os, signal, sys
from service.backup import restore
from service.cli import app

point, args = sys.argv[1], sys.argv[2:]
calls = 0


def dying(real, after):
    def wrapper(*a, **k):
        global calls
        calls += 1
        if calls > after:
            os.kill(os.getpid(), signal.SIGKILL)
        return real(*a, **k)
    return wrapper


if point == "copy":  # killed when the second file is being copied
    restore.copy_private = dying(restore.copy_private, 1)
elif point == "cache":  # killed as the first FACEREC_CACHE file is about to be put in place
    os.link = dying(os.link, 0)
elif point == "move":  # in a mount point: killed when the first file has been moved up
    os.rename = dying(os.rename, 1)
elif point == "moved":  # in a mount point: killed when every file has been moved up
    os.rmdir = dying(os.rmdir, 0)
else:  # killed as the restored data dir is about to be put in place
    os.rename = dying(os.rename, 0)
app(args, prog_name="facerec")
"""


def _killed_restore(
    point: str, backup: Path, target: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    args = [sys.executable, "-c", DIE, point, "restore", str(backup), "--data", str(target)]
    return subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("point", ["copy", "finish"])
@pytest.mark.parametrize("into", ["new", "empty"])
def test_a_restore_killed_half_way_leaves_the_target_empty_and_a_rerun_succeeds(
    data: Path, tmp_path: Path, point: str, into: str
) -> None:
    """Restored into an existing empty folder, the files were staged inside it and moved up one by one: a kill
    left a folder that was not empty (a staging folder, or some of the data dir), which is what a server or a
    rerun then found."""
    assert run_cli("backup", str(tmp_path / "b"), "--data", str(data))[0] == 0
    target = tmp_path / "restored"
    if into == "empty":
        target.mkdir()
    died = _killed_restore(point, tmp_path / "b", target)
    assert died.returncode == -signal.SIGKILL, died.stderr
    if into == "empty":
        assert os.listdir(target) == []
    else:
        assert not target.exists()
    left = [p.name for p in tmp_path.iterdir() if p.name.startswith(".facerec-partial-restored-")]
    assert len(left) == 1, "the restore was not killed half-way"
    code, out = run_cli("restore", str(tmp_path / "b"), "--data", str(target))
    assert code == 0, out
    assert f"note: removed {tmp_path / left[0]}" in out
    assert sorted(os.listdir(target)) == ["audit.log", "gallery.sqlite3", "keys.db", "uploads"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_an_existing_empty_folder_is_replaced_by_the_restored_data_dir(data: Path, tmp_path: Path) -> None:
    assert run_cli("backup", str(tmp_path / "b"), "--data", str(data))[0] == 0
    target = tmp_path / "mount"
    target.mkdir(mode=0o755)
    code, out = run_cli("restore", str(tmp_path / "b"), "--data", str(target))
    assert code == 0, out
    assert stat.S_IMODE(target.stat().st_mode) == 0o700
    assert sorted(p.name for p in target.iterdir()) == ["audit.log", "gallery.sqlite3", "keys.db", "uploads"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


@pytest.fixture
def volume(tmp_path: Path) -> Iterator[Path]:
    """An empty tmpfs mounted on ``<tmp>/volume`` (as a Docker volume is on /data); skipped where this user
    cannot mount."""
    path = tmp_path / "volume"
    path.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "facerec-test", str(path)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=True)


def test_a_volume_mount_point_is_filled_in_place(data: Path, tmp_path: Path, volume: Path) -> None:
    """A mount point cannot be renamed over (and nothing beside it is on its file system): the files are put
    into it."""
    assert run_cli("backup", str(tmp_path / "b"), "--data", str(data))[0] == 0
    inode = volume.stat().st_ino
    code, out = run_cli("restore", str(tmp_path / "b"), "--data", str(volume))
    assert code == 0, out
    assert os.path.ismount(volume) and volume.stat().st_ino == inode and stat.S_IMODE(volume.stat().st_mode) == 0o700
    assert sorted(p.name for p in volume.iterdir()) == ["audit.log", "gallery.sqlite3", "keys.db", "uploads"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_what_a_restore_killed_while_it_fills_the_cache_left_is_removed_by_the_next(data: Path, tmp_path: Path) -> None:
    """The cache files are written beside their place and linked in: a kill leaves no file under its real name
    (a model directory without its card), and the next restore removes what was left and says so."""
    old, new = tmp_path / "cache", tmp_path / "new-cache"
    register(old, "m1")  # the model of the fixture gallery's first faces
    assert run_cli("backup", str(tmp_path / "b"), "--data", str(data))[0] == 0
    target = tmp_path / "restored"
    died = _killed_restore("cache", tmp_path / "b", target, env={"FACEREC_CACHE": str(new)})
    assert died.returncode == -signal.SIGKILL, died.stderr
    assert not target.exists()
    left = list((new / "models" / "m1").iterdir())
    assert len(left) == 1 and left[0].name.startswith(".facerec-partial-card.json-"), left
    code, out = run_cli("restore", str(tmp_path / "b"), "--data", str(target), env={"FACEREC_CACHE": str(new)})
    assert code == 0, out
    assert f"note: removed {left[0]}" in out
    assert sorted(p.name for p in (new / "models" / "m1").iterdir()) == ["card.json", "model.weights.h5"]
    assert (new / "models" / "m1" / "card.json").read_bytes() == (old / "models" / "m1" / "card.json").read_bytes()


@pytest.mark.parametrize("point", ["move", "moved"])
def test_a_restore_killed_while_it_fills_a_mount_point_is_taken_back_by_the_next(
    data: Path, tmp_path: Path, volume: Path, point: str
) -> None:
    """Killed while its files were moved up into a volume's mount point, a restore left part of a data dir that
    the next run refused as not empty. The next run takes out what was moved and restores; a restore killed
    after its last file was moved is complete, and stays."""
    assert run_cli("backup", str(tmp_path / "b"), "--data", str(data))[0] == 0
    died = _killed_restore(point, tmp_path / "b", volume)
    assert died.returncode == -signal.SIGKILL, died.stderr
    restored = ["audit.log", "gallery.sqlite3", "keys.db", "uploads"]
    staging = [p for p in volume.iterdir() if p.name.startswith(".facerec-partial-volume-")]
    assert len(staging) == 1
    moved = sorted(p.name for p in volume.iterdir() if p not in staging)
    assert moved == (["audit.log"] if point == "move" else restored)
    code, out = run_cli("restore", str(tmp_path / "b"), "--data", str(volume))
    assert f"note: removed {staging[0]}" in out
    if point == "move":
        assert code == 0 and f"note: removed {volume / 'audit.log'}" in out, out
    else:
        assert code == 2 and "is not empty (audit.log, gallery.sqlite3, keys.db, ...)" in out, out
    assert sorted(p.name for p in volume.iterdir()) == restored
    assert (volume / "keys.db").read_bytes() == (tmp_path / "b" / "keys.db").read_bytes()
