"""What a backup carries of ``FACEREC_CACHE``: the fine-tuned models the data dir uses (``FACEREC_MODEL``, the
gallery's faces) and the calibration tables and cohorts of its models, never the pretrained weights, the converted
encoders or models and tables it does not use; and how restore puts them into the target cache (kept when the
same, refused when different, removed again when the restore fails). Model directories here are registered
files (a valid card, bytes for weights): tests/backup/test_model_restore.py serves a real one."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from embeddings.models import resolve_model
from tests.backup.helpers import PRETRAINED, register, run_cli

ACTIVE = "ft-active-20261201000000"
"""The model FACEREC_MODEL names (no face of the fixture's gallery uses it yet)."""


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    """FACEREC_CACHE with the models ``m1`` (the fixture gallery's 2 faces), ACTIVE and an unused one, tables
    and a cohort of m1, ACTIVE's tables, tables of unused models, the pretrained weights and a converted
    encoder. ``m2`` (1 face) is not there."""
    root = tmp_path / "cache"
    for model_id in ("m1", ACTIVE, "ft-unused-20261101000000"):
        register(root, model_id)
    (root / "calibration").mkdir()
    for name in ("m1.npz", "m1.cohort.npz", f"{ACTIVE}.npz", "ft-unused-20261101000000.npz", f"{PRETRAINED}.npz"):
        (root / "calibration" / name).write_bytes(b"table of " + name.encode())
    (root / "weights").mkdir()
    (root / "weights" / f"{PRETRAINED}.weights.h5").write_bytes(b"pretrained")
    (root / "encoders" / "abc").mkdir(parents=True)
    (root / "encoders" / "abc" / "facenet.xml").write_bytes(b"converted")
    return root


CARRIED = [
    f"calibration/{ACTIVE}.npz",
    "calibration/m1.cohort.npz",
    "calibration/m1.npz",
    f"models/{ACTIVE}/card.json",
    f"models/{ACTIVE}/model.weights.h5",
    "models/m1/card.json",
    "models/m1/model.weights.h5",
]


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _backup(data: Path, dest: Path, cache: Path, *extra: str) -> tuple[int, str]:
    return run_cli("backup", str(dest), "--data", str(data), *extra, env=_env(cache))


def _env(cache: Path) -> dict[str, str]:
    return {"FACEREC_CACHE": str(cache), "FACEREC_MODEL": ACTIVE}


def test_the_models_the_data_dir_uses_and_their_tables_are_backed_up_and_restored(
    data: Path, cache: Path, tmp_path: Path
) -> None:
    """A backup left FACEREC_CACHE out: restored on a new machine, the gallery's embeddings belonged to a model
    (and FACEREC_MODEL named one) that the machine did not have."""
    code, out = _backup(data, tmp_path / "b", cache)
    assert code == 0, out
    assert f"; FACEREC_CACHE: 7 files (models {ACTIVE}, m1; 3 calibration files)" in out
    assert "warning: the model m2 (gallery.sqlite3 faces) is not in FACEREC_CACHE" in out
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert [f["path"] for f in manifest["cache"]] == CARRIED
    for f in manifest["cache"]:
        raw = (cache / f["path"]).read_bytes()
        assert f["size"] == len(raw) and len(f["sha256"]) == 64
        assert (tmp_path / "b" / "FACEREC_CACHE" / f["path"]).read_bytes() == raw
    assert set(_files(tmp_path / "b" / "FACEREC_CACHE")) == set(CARRIED)  # no weights, encoder, unused model

    fresh = tmp_path / "new-cache"
    code, out = run_cli("restore", str(tmp_path / "b"), "--data", str(tmp_path / "restored"), env=_env(fresh))
    assert code == 0, out
    assert f"into FACEREC_CACHE {fresh}: 7 files (models {ACTIVE}, m1; 3 calibration files)" in out
    assert _files(fresh) == {rel: (cache / rel).read_bytes() for rel in CARRIED}
    assert resolve_model(ACTIVE, root=fresh).weights_path == fresh / "models" / ACTIVE / "model.weights.h5"
    assert (tmp_path / "restored" / "gallery.sqlite3").is_file()


def test_the_pretrained_models_own_tables_are_carried_when_it_is_used(data: Path, cache: Path, tmp_path: Path) -> None:
    """Tables fitted by ``facerec calibrate`` for the pretrained model are the user's, its weights are not."""
    env = {"FACEREC_CACHE": str(cache)}
    code, out = run_cli("backup", str(tmp_path / "b"), "--data", str(data), "--json", env=env)
    assert code == 0, out
    carried = [f["path"] for f in json.loads(out)["cache"]]
    tables = [f"calibration/{PRETRAINED}.npz", "calibration/m1.cohort.npz", "calibration/m1.npz"]
    assert carried == [*tables, "models/m1/card.json", "models/m1/model.weights.h5"]


def test_files_already_in_the_target_cache_are_kept(data: Path, cache: Path, tmp_path: Path) -> None:
    assert _backup(data, tmp_path / "b", cache)[0] == 0
    before = {rel: (cache / rel).stat().st_ino for rel in CARRIED}
    code, out = run_cli("restore", str(tmp_path / "b"), "--data", str(tmp_path / "r"), "--json", env=_env(cache))
    assert code == 0, out
    answer = json.loads(out)
    assert answer["cache_written"] == [] and answer["cache_kept"] == CARRIED
    assert {rel: (cache / rel).stat().st_ino for rel in CARRIED} == before

    (cache / "calibration" / "m1.npz").unlink()  # one missing: written, the others kept
    code, out = run_cli("restore", str(tmp_path / "b"), "--data", str(tmp_path / "r2"), "--json", env=_env(cache))
    assert code == 0, out
    assert json.loads(out)["cache_written"] == ["calibration/m1.npz"]
    assert (cache / "calibration" / "m1.npz").read_bytes() == b"table of m1.npz"


@pytest.mark.parametrize("what", ["other bytes", "a folder"])
def test_a_different_file_in_the_target_cache_refuses_the_restore(
    data: Path, cache: Path, tmp_path: Path, what: str
) -> None:
    assert _backup(data, tmp_path / "b", cache)[0] == 0
    target = tmp_path / "target-cache"
    register(target, "m1")  # another m1 (other weights) on the new machine
    if what == "a folder":
        (target / "models" / "m1" / "card.json").unlink()
        (target / "models" / "m1" / "card.json").mkdir()
    before = _files(target)
    code, out = run_cli("restore", str(tmp_path / "b"), "--data", str(tmp_path / "r"), env=_env(target))
    assert code == 2 and out.count("\n") == 1 and out.startswith("error: backup_refused: "), out
    named = "models/m1/card.json" if what == "a folder" else "models/m1/model.weights.h5"
    assert f"FACEREC_CACHE {target} already holds {named}, which differs from the backup's" in out
    assert _files(target) == before and not (tmp_path / "r").exists()
    assert sorted(p.name for p in (target / "models").iterdir()) == ["m1"]


@pytest.mark.parametrize("damage", ["flip", "outside", "weights"])
def test_a_damaged_cache_entry_is_refused_before_anything_is_written(
    data: Path, cache: Path, tmp_path: Path, damage: str
) -> None:
    backup = tmp_path / "b"
    assert _backup(data, backup, cache)[0] == 0
    if damage == "flip":
        victim = backup / "FACEREC_CACHE" / "models" / "m1" / "model.weights.h5"
        victim.write_bytes(b"x" + victim.read_bytes()[1:])
    else:  # a crafted manifest: a path out of the cache, or one that would replace the pretrained weights
        manifest = json.loads((backup / "manifest.json").read_text())
        manifest["cache"][0]["path"] = "../escape.npz" if damage == "outside" else f"weights/{PRETRAINED}.weights.h5"
        (backup / "manifest.json").write_text(json.dumps(manifest))
    fresh = tmp_path / "new-cache"
    code, out = run_cli("restore", str(backup), "--data", str(tmp_path / "r"), env=_env(fresh))
    assert code == 2 and out.count("\n") == 1, out
    if damage == "flip":
        assert "FACEREC_CACHE/models/m1/model.weights.h5 does not match its sha256" in out
    else:
        assert "is damaged: it names the cache file" in out
    assert not fresh.exists() and not (tmp_path / "r").exists()


def test_a_backup_of_format_1_without_cache_files_still_restores(data: Path, tmp_path: Path) -> None:
    backup = tmp_path / "b"
    assert run_cli("backup", str(backup), "--data", str(data))[0] == 0
    manifest = json.loads((backup / "manifest.json").read_text())
    del manifest["cache"]
    manifest["format_version"] = 1
    (backup / "manifest.json").write_text(json.dumps(manifest))
    code, out = run_cli("restore", str(backup), "--data", str(tmp_path / "r"))
    assert code == 0, out
    assert (tmp_path / "r" / "keys.db").is_file() and not (tmp_path / "cache").exists()
    manifest["format_version"] = 3
    (backup / "manifest.json").write_text(json.dumps(manifest))
    code, out = run_cli("restore", str(backup), "--data", str(tmp_path / "r3"))
    assert code == 2 and "has format version 3; this facerec reads 1 and 2" in out, out


def test_a_cache_inside_the_data_dir_is_not_copied_whole(data: Path, cache: Path, tmp_path: Path) -> None:
    """FACEREC_CACHE under the data dir was copied as the data dir's own files, pretrained weights and all."""
    inside = data / "cache"
    cache.rename(inside)
    code, out = _backup(data, tmp_path / "b", inside, "--json")
    assert code == 0, out
    manifest = json.loads(out)
    assert manifest["skipped"]["cache/"].startswith("FACEREC_CACHE: what the data dir needs of it is in")
    assert not [f for f in manifest["files"] if f["path"].startswith("cache/")]
    assert [f["path"] for f in manifest["cache"]] == CARRIED


def test_a_data_dir_folder_named_like_the_backups_cache_folder_is_refused(data: Path, tmp_path: Path) -> None:
    (data / "FACEREC_CACHE").mkdir()
    (data / "FACEREC_CACHE" / "notes.txt").write_text("mine")
    code, out = run_cli("backup", str(tmp_path / "b"), "--data", str(data))
    assert code == 2 and "FACEREC_CACHE is in the way" in out and not (tmp_path / "b").exists(), out


def test_a_restore_that_fails_removes_the_cache_files_it_wrote(
    data: Path, cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The data dir never appears, and the target cache is as it was: no model folder half made."""
    from service.backup import cache as cache_module

    assert _backup(data, tmp_path / "b", cache)[0] == 0
    real_link, calls = os.link, []

    def link_then_fail(src: str, dst: str) -> None:
        calls.append(dst)
        if len(calls) == 4:
            raise OSError(28, "No space left on device")
        real_link(src, dst)

    monkeypatch.setattr(cache_module.os, "link", link_then_fail)
    fresh = tmp_path / "new-cache"
    fresh.mkdir()
    code, out = run_cli("restore", str(tmp_path / "b"), "--data", str(tmp_path / "r"), env=_env(fresh))
    assert code == 1 and "No space left on device" in out, out
    assert len(calls) == 4 and os.listdir(fresh) == [] and not (tmp_path / "r").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
