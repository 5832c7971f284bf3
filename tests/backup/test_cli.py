"""``facerec backup`` / ``facerec restore`` on a data dir of real stores (keys, audit log, a gallery database with
subjects and faces written through SQL, an upload): what is copied and left out, modes, the manifest, and every
refusal (exit 2, one line, nothing written)."""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

import pytest

from service.gallery.sqlite.schema import DB_NAME
from tests.backup.helpers import run_cli, tree


def test_backup_and_restore_round_trip_with_private_modes(data: Path, tmp_path: Path) -> None:
    code, out = run_cli("backup", str(tmp_path / "b"), "--data", str(data), "--json")
    assert code == 0, out
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert json.loads(out)["files"] == manifest["files"]
    assert manifest["format"] == "facerec-backup" and manifest["format_version"] == 2
    assert manifest["cache"] == []  # m1 and m2 are not in FACEREC_CACHE: listed as left out
    assert "is not in FACEREC_CACHE" in manifest["skipped"]["FACEREC_CACHE/models/m1/"]
    assert manifest["counts"] == {"subjects": 2, "faces": 3, "keys": 1, "audit_records": 2}
    assert manifest["models"] == {"m1": 2, "m2": 1} and manifest["created_at"].endswith("Z")
    assert [f["path"] for f in manifest["files"]] == ["audit.log", DB_NAME, "keys.db", "uploads/job.video"]
    assert {"index/", "LOCK"} <= set(manifest["skipped"])
    assert tree(tmp_path / "b") == {
        ".": 0o700,
        "audit.log": 0o600,
        DB_NAME: 0o600,
        "keys.db": 0o600,
        "manifest.json": 0o600,
        "uploads": 0o700,
        "uploads/job.video": 0o600,
    }
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging folder left

    code, out = run_cli("restore", str(tmp_path / "b"), "--data", str(tmp_path / "restored"))
    assert code == 0, out
    restored = tmp_path / "restored"
    assert tree(restored) == {k: v for k, v in tree(tmp_path / "b").items() if k != "manifest.json"}
    assert (restored / "audit.log").read_bytes() == (data / "audit.log").read_bytes()
    with sqlite3.connect(restored / DB_NAME) as db:
        assert db.execute("SELECT name FROM subjects ORDER BY pk").fetchall() == [("a",), ("b",)]
    db.close()
    code, out = run_cli("keys", "list", "--json", "--data", str(restored))
    assert code == 0 and [k["name"] for k in json.loads(out)] == ["ops"]


def test_a_backup_inside_the_data_dir_is_not_backed_up_again(data: Path) -> None:
    assert run_cli("backup", str(data / "backups" / "one"), "--data", str(data))[0] == 0
    code, out = run_cli("backup", str(data / "backups" / "two"), "--data", str(data), "--json")
    assert code == 0, out
    manifest = json.loads(out)
    assert not [f for f in manifest["files"] if f["path"].startswith("backups/")]
    assert manifest["skipped"]["backups/one/"] == "a facerec backup"


def test_the_bootstrap_token_is_not_backed_up(data: Path, tmp_path: Path) -> None:
    """The container's first admin token, in plaintext in the data dir until its owner deletes it, stays out:
    under its usual name, its temporary name, or the name FACEREC_BOOTSTRAP_ADMIN_KEY_FILE gives."""
    for name in ("bootstrap-admin-key", ".bootstrap-admin-key.x1Yz", "first-token"):
        (data / name).write_text("frk_secret_token\n")
    env = {"FACEREC_BOOTSTRAP_ADMIN_KEY_FILE": str(data / "first-token")}
    code, out = run_cli("backup", str(tmp_path / "b"), "--data", str(data), "--json", env=env)
    assert code == 0, out
    assert {"bootstrap-admin-key", ".bootstrap-admin-key.x1Yz", "first-token"} <= set(json.loads(out)["skipped"])
    assert not (tmp_path / "b" / "bootstrap-admin-key").exists()
    assert not [p for p in (tmp_path / "b").rglob("*") if p.is_file() and b"frk_secret_token" in p.read_bytes()]


def test_a_file_whose_name_is_not_utf8_is_backed_up_and_restored(data: Path, tmp_path: Path) -> None:
    """A file name's bytes that are not UTF-8 (Python: lone surrogates) broke the manifest's writing with a
    traceback; the manifest escapes them and the restore writes the same name."""
    odd = os.fsdecode(b"notes-\xff.txt")
    (data / odd).write_bytes(b"kept")
    code, out = run_cli("backup", str(tmp_path / "b"), "--data", str(data))
    assert code == 0, out
    (tmp_path / "b" / "manifest.json").read_text(encoding="utf-8")  # still UTF-8
    code, out = run_cli("restore", str(tmp_path / "b"), "--data", str(tmp_path / "restored"))
    assert code == 0, out
    assert (tmp_path / "restored" / odd).read_bytes() == b"kept"
    assert os.fsencode(odd) in os.listdir(os.fsencode(tmp_path / "restored"))


def test_a_queued_video_job_restored_elsewhere_reads_its_restored_upload(data: Path, tmp_path: Path) -> None:
    """A job's row names its upload by the path it had when it was made: restored into another data dir, the job
    failed as "upload gone" (or, with the old data dir still there, read and then deleted that one's file)."""
    from service.video.jobstore import SQLiteJobStore

    jobs = SQLiteJobStore(data)
    job_id, path = jobs.new_path()
    path.write_bytes(b"video bytes")
    jobs.create(job_id, filename="clip.mp4", path=path, fps=None, size=11)
    jobs.close()
    assert run_cli("backup", str(tmp_path / "b"), "--data", str(data))[0] == 0
    assert run_cli("restore", str(tmp_path / "b"), "--data", str(tmp_path / "moved"))[0] == 0
    restored = SQLiteJobStore(tmp_path / "moved")
    try:
        restored.recover()  # the restored server's start
        job = restored.next_queued()
        assert job is not None and job.id == job_id
        assert Path(job.path) == tmp_path / "moved" / "uploads" / f"{job_id}.video"
        assert Path(job.path).read_bytes() == b"video bytes"
    finally:
        restored.close()


def test_a_backup_and_a_data_dir_may_have_names_as_long_as_the_system_allows(data: Path, tmp_path: Path) -> None:
    """The folder written aside took the target's whole name after its prefix: a name of 240 bytes (the limit is
    255) failed with "File name too long"."""
    dest, restored = tmp_path / ("b" * 240), tmp_path / ("\u00e9" * 120)  # 240 bytes in UTF-8
    code, out = run_cli("backup", str(dest), "--data", str(data))
    assert code == 0, out
    code, out = run_cli("restore", str(dest), "--data", str(restored))
    assert code == 0, out
    assert (restored / "keys.db").is_file()


def test_a_record_being_appended_is_left_out(data: Path, tmp_path: Path) -> None:
    with open(data / "audit.log", "ab") as f:
        f.write(b'{"ts": "half a rec')
    assert run_cli("backup", str(tmp_path / "b"), "--data", str(data))[0] == 0
    copied = (tmp_path / "b" / "audit.log").read_bytes()
    assert copied.endswith(b"}\n") and len(copied.splitlines()) == 2


def test_a_non_empty_destination_is_refused(data: Path, tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "keep.txt").write_text("mine")
    code, out = run_cli("backup", str(dest), "--data", str(data))
    assert code == 2 and out.count("\n") == 1 and "is not empty (keep.txt)" in out, out
    assert [p.name for p in dest.iterdir()] == ["keep.txt"]
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    code, out = run_cli("backup", str(a_file), "--data", str(data))
    assert code == 2 and "exists and is not a folder" in out and a_file.read_text() == "x"


def test_a_non_empty_data_dir_is_never_restored_into(data: Path, tmp_path: Path) -> None:
    assert run_cli("backup", str(tmp_path / "b"), "--data", str(data))[0] == 0
    before = {p: p.read_bytes() for p in data.rglob("*") if p.is_file()}
    code, out = run_cli("restore", str(tmp_path / "b"), "--data", str(data))
    assert code == 2 and out.count("\n") == 1, out
    assert f"refusing to restore into the data dir {data} is not empty" in out
    assert {p: p.read_bytes() for p in data.rglob("*") if p.is_file()} == before


@pytest.mark.parametrize("damage", ["flip", "truncate", "delete", "manifest"])
def test_a_damaged_backup_is_refused_before_anything_is_written(data: Path, tmp_path: Path, damage: str) -> None:
    backup = tmp_path / "b"
    assert run_cli("backup", str(backup), "--data", str(data))[0] == 0
    victim = backup / "keys.db"
    if damage == "flip":
        raw = bytearray(victim.read_bytes())
        raw[len(raw) // 2] ^= 0x01
        victim.write_bytes(bytes(raw))
    elif damage == "truncate":
        victim.write_bytes(victim.read_bytes()[:-100])
    elif damage == "delete":
        victim.unlink()
    else:
        (backup / "manifest.json").write_text("{not json")
    target = tmp_path / "restored"
    code, out = run_cli("restore", str(backup), "--data", str(target))
    assert code == 2 and out.count("\n") == 1 and out.startswith("error: backup_refused: "), out
    says = {"flip": "does not match its sha256", "truncate": "bytes, its manifest says", "delete": "is missing"}
    assert says.get(damage, "manifest.json cannot be read") in out
    assert not target.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["b", "data"]


def test_a_folder_that_is_not_a_backup_is_refused(tmp_path: Path) -> None:
    (tmp_path / "photos").mkdir()
    code, out = run_cli("restore", str(tmp_path / "photos"), "--data", str(tmp_path / "d"))
    assert code == 2 and "is not a facerec backup (no manifest.json)" in out and not (tmp_path / "d").exists()


def test_a_folder_that_is_not_a_data_dir_is_refused(tmp_path: Path) -> None:
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("x")
    code, out = run_cli("backup", str(tmp_path / "b"), "--data", str(tmp_path / "notes"))
    assert code == 2 and "holds no facerec database or audit log" in out and not (tmp_path / "b").exists()
    code, out = run_cli("backup", str(tmp_path / "b"), "--data", str(tmp_path / "missing"))
    assert code == 1 and "no data dir at" in out and not (tmp_path / "b").exists()


def test_postgres_says_pg_dump(tmp_path: Path) -> None:
    env = {"FACEREC_DATABASE_URL": "postgresql://u:secret@db.invalid:5432/facerec"}
    for args, tool in ((["backup", str(tmp_path / "b")], "pg_dump"), (["restore", str(tmp_path)], "pg_restore")):
        code, out = run_cli(*args, env=env)
        assert code == 2 and out.count("\n") == 1 and tool in out and "docs/POSTGRES.md" in out, out
        assert "secret" not in out
    assert not (tmp_path / "b").exists()


def test_an_upload_removed_while_the_backup_runs_is_left_out(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server deletes a video job's upload when the job ends, at any time: one gone between the scan and its
    copy is listed as removed, and the backup still succeeds."""
    from service.backup import create

    scanned = create.scan

    def scan_then_the_job_ends(*args: object, **kwargs: object) -> object:
        found = scanned(*args, **kwargs)  # type: ignore[arg-type]
        (data / "uploads" / "job.video").unlink()
        return found

    monkeypatch.setattr(create, "scan", scan_then_the_job_ends)
    code, out = run_cli("backup", str(tmp_path / "b"), "--data", str(data), "--json")
    assert code == 0, out
    manifest = json.loads(out)
    assert manifest["skipped"]["uploads/job.video"].startswith("removed while the backup ran")
    assert "uploads/job.video" not in {f["path"] for f in manifest["files"]}
    assert not (tmp_path / "b" / "uploads" / "job.video").exists()
    assert run_cli("restore", str(tmp_path / "b"), "--data", str(tmp_path / "restored"))[0] == 0


def test_a_backup_whose_folder_links_outside_it_is_refused(data: Path, tmp_path: Path) -> None:
    """A crafted backup whose ``uploads`` folder is a link elsewhere would make restore read files outside it."""
    assert run_cli("backup", str(tmp_path / "b"), "--data", str(data))[0] == 0
    elsewhere = tmp_path / "elsewhere"
    (tmp_path / "b" / "uploads").rename(elsewhere)
    (tmp_path / "b" / "uploads").symlink_to(elsewhere)
    code, out = run_cli("restore", str(tmp_path / "b"), "--data", str(tmp_path / "restored"))
    assert code == 2 and "uploads/job.video leads outside it" in out, out
    assert not (tmp_path / "restored").exists()


def test_the_bootstrap_token_named_through_a_link_is_not_backed_up(data: Path, tmp_path: Path) -> None:
    """FACEREC_BOOTSTRAP_ADMIN_KEY_FILE spelt through a symbolic link to the data dir names the same file."""
    (data / "admin.token").write_text("frk_secret_token\n")
    (tmp_path / "link").symlink_to(data)
    env = {"FACEREC_BOOTSTRAP_ADMIN_KEY_FILE": str(tmp_path / "link" / "admin.token")}
    code, out = run_cli("backup", str(tmp_path / "b"), "--data", str(data), "--json", env=env)
    assert code == 0 and "admin.token" in json.loads(out)["skipped"], out


@pytest.mark.parametrize("into", ["new", "empty"])
def test_what_a_killed_backup_left_is_removed_by_the_next_one(data: Path, tmp_path: Path, into: str) -> None:
    """A backup killed with SIGKILL cannot clean up: its staging folder (copies of biometric data) stayed beside a
    new destination, or inside an empty one, which the next run then refused as not empty. The next backup to
    the same destination removes it when its process is gone, says so, and succeeds."""
    import subprocess
    import sys

    dest = tmp_path / "b"
    if into == "empty":
        dest.mkdir()
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(gone.stdout)  # a process that has ended
    left = (dest if into == "empty" else tmp_path) / f".facerec-partial-b-{pid}"
    left.mkdir()
    (left / "gallery.sqlite3").write_bytes(b"copied faces")
    other = tmp_path / f".facerec-partial-other-{pid}"  # another destination's: not touched
    other.mkdir()
    code, out = run_cli("backup", str(dest), "--data", str(data))
    assert code == 0, out
    assert f"note: removed {left}, left by an interrupted backup or restore" in out
    assert not left.exists() and other.exists()
    assert (dest / "manifest.json").is_file()
