"""The ``facerec`` CLI through typer's CliRunner: bulk enrolment (local and through a server), resumability,
identify, verify, subjects and keys, tables and ``--json``."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from service.audit import cli_actor
from service.cli import app
from service.keys import KeyStore
from tests.service.helpers import images, png
from tests.service.server import Server

pytestmark = pytest.mark.slow

PEOPLE = ("ben_afflek", "elton_john")


@pytest.fixture(scope="module")
def people_dir(tmp_path_factory: pytest.TempPathFactory, dataset: Path) -> Path:
    """An LFW-style folder: 2 people x 4 train images (the first ones, good and bad alike)."""
    root = tmp_path_factory.mktemp("people")
    for person in PEOPLE:
        (root / person).mkdir()
        for path in images(dataset, "train", person)[:4]:
            shutil.copy(path, root / person / path.name)
    (root / "empty_person").mkdir()
    return root


def run(*args: str) -> Any:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, f"{args}: {result.output}\n{result.exception!r}"
    return result


def run_json(*args: str) -> Any:
    return json.loads(run(*args, "--json").stdout)


def test_enroll_local_is_resumable(people_dir: Path, tmp_path: Path, dataset: Path) -> None:
    data = str(tmp_path / "data")
    first = run_json("enroll", str(people_dir), "--data", data)
    assert first["subjects_created"] == 2
    assert first["enrolled"] + len(first["rejected"]) == 8 and first["enrolled"] >= 5
    for rej in first["rejected"]:
        assert rej["code"] in {"no_face", "multiple_faces", "low_quality", "pose"} and Path(rej["file"]).is_file()
    second = run_json("enroll", str(people_dir), "--data", data)
    assert second["subjects_created"] == 0 and second["enrolled"] == 0
    assert second["skipped"] == first["enrolled"]
    assert len(second["rejected"]) == len(first["rejected"])  # rejects are checked again, and fail again

    table = run("enroll", str(people_dir), "--data", data).stdout
    assert "0 faces enrolled" in table and f"{first['enrolled']} already enrolled" in table

    subjects = run_json("subjects", "list", "--data", data)
    assert sorted(s["name"] for s in subjects) == ["ben afflek", "elton john"]
    assert sum(s["face_count"] for s in subjects) == first["enrolled"]
    ben = next(s for s in subjects if s["name"] == "ben afflek")
    shown = run_json("subjects", "show", ben["id"], "--data", data)
    assert len(shown["faces"]) == ben["face_count"] and all(len(f["image_sha256"]) == 64 for f in shown["faces"])
    assert "ben afflek" in run("subjects", "show", ben["id"], "--data", data).stdout

    probe = images(dataset, "val", "ben_afflek")[0]
    found = run_json("identify", str(probe), "--data", data)
    assert found["faces"][0]["match"]["name"] == "ben afflek"
    assert "ben afflek" in run("identify", str(probe), "--data", data).stdout
    stranger = images(dataset, "val", "madonna")[0]
    assert run_json("identify", str(stranger), "--data", data)["faces"][0]["match"] is None

    same = run_json("verify", str(probe), str(images(dataset, "val", "ben_afflek")[1]), "--data", data)
    assert same["match"] is True and same["distance"] <= same["threshold"]
    differs = run("verify", str(probe), str(stranger), "--data", data).stdout
    assert "different people" in differs and "threshold" in differs

    deleted = run_json("subjects", "delete", ben["id"], "--yes", "--data", data)
    assert deleted == {"deleted": ben["id"], "faces": ben["face_count"]}
    assert [s["name"] for s in run_json("subjects", "list", "--data", data)] == ["elton john"]
    missing = CliRunner().invoke(app, ["subjects", "show", ben["id"], "--data", data])
    assert missing.exit_code == 1 and "no subject" in missing.output
    assert CliRunner().invoke(app, ["subjects", "delete", ben["id"], "--yes", "--data", data]).exit_code == 1

    # every local change is in the audit log, as the API would record it: actor cli:<os user>, via cli
    text = (tmp_path / "data" / "audit.log").read_text()
    records = [json.loads(line) for line in text.splitlines()]
    assert {r["actor"] for r in records} == {cli_actor()} and cli_actor().startswith("cli:")
    assert all(r["via"] == "cli" and r["ts"].endswith("+00:00") for r in records)
    ids = {s["name"]: s["id"] for s in subjects}
    created = [r["target"]["subject_id"] for r in records if r["action"] == "subject.create"]
    assert sorted(created) == sorted(ids.values())  # the second and third runs created nothing
    enrolled = [r for r in records if r["action"] == "face.enroll"]
    assert sum(r["count"] for r in enrolled) == first["enrolled"]  # one record per stored image, none for rejects
    assert {f["id"] for f in shown["faces"]} == {
        i for r in enrolled if r["target"]["subject_id"] == ben["id"] for i in r["target"]["face_ids"]
    }
    assert [r["target"] for r in records if r["action"] == "subject.delete"] == [{"subject_id": ben["id"]}]
    assert records[-1]["action"] == "subject.delete"  # the failed second delete is not recorded
    for f in shown["faces"]:
        assert f["image_sha256"] not in text  # ids only
    assert "ben afflek" not in text and "embedding" not in text


def test_keys_commands(tmp_path: Path) -> None:
    data = str(tmp_path / "data")
    made = run_json("keys", "create", "--scope", "recognize", "--name", "kiosk", "--data", data)
    assert made["token"].startswith("frk_") and made["scope"] == "recognize"
    plain = run("keys", "create", "--scope", "admin", "--data", data)
    token = plain.stdout.strip()
    assert token.startswith("frk_") and "\n" not in token
    listed = run_json("keys", "list", "--data", data)
    assert [(k["name"], k["scope"], k["revoked_at"]) for k in listed] == [
        ("kiosk", "recognize", None),
        ("", "admin", None),
    ]
    assert "token" not in json.dumps(listed) and made["token"] not in run("keys", "list", "--data", data).stdout
    run("keys", "revoke", made["id"], "--data", data)
    store = KeyStore(Path(data))
    assert store.authenticate(made["token"]) is None
    key = store.authenticate(token)
    assert key is not None and key.scope == "admin"
    store.close()
    bad = CliRunner().invoke(app, ["keys", "create", "--scope", "root", "--data", data])
    assert bad.exit_code == 2
    for name in ("x" * 201, "bell\a", "esc\x1b[31m"):
        bad = CliRunner().invoke(app, ["keys", "create", "--scope", "admin", "--name", name, "--data", data])
        assert bad.exit_code == 2 and "printable" in bad.output
    again = run("keys", "revoke", made["id"], "--data", data)
    assert "already revoked" in again.output
    audit = Path(data) / "audit.log"
    assert sum("key.revoke" in line for line in audit.read_text().splitlines()) == 1
    # the audit log cannot be written: no active key is left whose token was never shown
    audit.rename(Path(data) / "audit.kept")
    audit.mkdir()
    broken = CliRunner().invoke(app, ["keys", "create", "--scope", "admin", "--name", "ghost", "--data", data])
    assert broken.exit_code == 1 and "was revoked" in broken.output and "Traceback" not in broken.output
    ghosts = [k for k in run_json("keys", "list", "--data", data) if k["name"] == "ghost"]
    assert len(ghosts) == 1 and ghosts[0]["revoked_at"] is not None
    assert len([k for k in run_json("keys", "list", "--data", data) if k["revoked_at"] is None]) == 1


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, dataset: Path) -> Iterator[tuple[Server, str]]:
    data = tmp_path_factory.mktemp("cli-server") / "data"
    store = KeyStore(data)
    token = store.create(scope="admin", name="cli")[1]
    store.close()
    srv = Server(data).start()
    yield srv, token
    srv.stop()


def test_enroll_through_a_server(people_dir: Path, server: tuple[Server, str], dataset: Path) -> None:
    srv, token = server
    remote = ("--server", srv.url, "--api-key", token)
    first = run_json("enroll", str(people_dir), *remote)
    assert first["subjects_created"] == 2 and first["enrolled"] >= 5
    second = run_json("enroll", str(people_dir), *remote)
    assert second["enrolled"] == 0 and second["skipped"] == first["enrolled"]
    found = run_json("identify", str(images(dataset, "val", "elton_john")[0]), *remote)
    assert found["faces"][0]["match"]["name"] == "elton john"
    assert len(run_json("subjects", "list", *remote)) == 2
    denied = CliRunner().invoke(app, ["subjects", "list", "--server", srv.url, "--api-key", "frk_x_y"])
    assert denied.exit_code == 1 and "401 unauthorized" in denied.output
    # an id is one path segment: "<id>/photos" must not reach DELETE /v1/subjects/<id>/photos (or anything else)
    sid = run_json("subjects", "list", *remote)[0]["id"]
    for verb in (["delete", f"{sid}/photos", "-y"], ["show", f"{sid}?x=1"], ["delete", "..", "-y"]):
        result = CliRunner().invoke(app, ["subjects", *verb, *remote])
        assert result.exit_code == 1 and "no subject" in result.output and "Traceback" not in result.output, verb
    assert len(run_json("subjects", "list", *remote)) == 2
    both = CliRunner().invoke(app, ["subjects", "list", *remote, "--data", "elsewhere"])
    assert both.exit_code == 0 and "--data elsewhere is not used with --server" in both.output
    for url, shown in (("http://[::1", "not a valid URL"), ("http://user:pw@127.0.0.1:1", "user:***@127.0.0.1")):
        result = CliRunner().invoke(app, ["subjects", "list", "--server", url, "--api-key", token])
        assert result.exit_code == 1 and shown in result.output and "pw@" not in result.output, result.output


def test_local_library_errors_are_one_line_not_a_traceback(tmp_path: Path, dataset: Path) -> None:
    data = str(tmp_path / "data")
    Path(data).mkdir()  # identify reads a data dir: a missing one is an error of its own
    notes = tmp_path / "notes.txt"
    notes.write_text("not a photo\n")
    result = CliRunner().invoke(app, ["identify", str(notes), "--data", data])
    assert result.exit_code == 1, result.output
    assert "error: invalid_image: " in result.output and "Traceback" not in result.output
    blank = tmp_path / "blank.png"
    blank.write_bytes(png(200, 200))
    face = images(dataset, "val", "ben_afflek")[0]
    result = CliRunner().invoke(app, ["verify", str(face), str(blank), "--data", data])
    assert result.exit_code == 1, result.output
    assert "error: no_face: " in result.output and "Traceback" not in result.output


def test_a_data_dir_that_cannot_be_used_is_one_error_line(tmp_path: Path) -> None:
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    bad_gallery, bad_keys, dir_gallery = (tmp_path / n for n in ("bad_gallery", "bad_keys", "dir_gallery"))
    for folder in (bad_gallery, bad_keys, dir_gallery):
        folder.mkdir()
    (bad_gallery / "gallery.sqlite3").write_bytes(b"not a database, just bytes" * 100)
    (bad_keys / "keys.db").write_bytes(b"not a database, just bytes" * 100)
    (dir_gallery / "gallery.sqlite3").mkdir()
    cases = [
        (a_file, "is not a directory"),
        (a_file / "sub", "Not a directory"),
        (bad_gallery, "gallery.sqlite3 cannot be used: file is not a database"),
        (bad_keys, "keys.db cannot be used: file is not a database"),
        (dir_gallery, "gallery.sqlite3 cannot be used"),
    ]
    for data, says in cases:
        for command in (["subjects", "list"], ["keys", "list"]):
            if command[0] == "keys" and data in (bad_gallery, dir_gallery):
                continue  # the key store alone opens fine there
            result = CliRunner().invoke(app, [*command, "--data", str(data)])
            assert result.exit_code == 1, (command, data, result.output)
            assert "error: storage_unavailable: " in result.output and says in result.output, result.output
            assert "Traceback" not in result.output


def test_thresholds_outside_0_to_2_are_refused_like_the_api(tmp_path: Path, dataset: Path) -> None:
    face = str(images(dataset, "val", "ben_afflek")[0])
    for value in ("nan", "inf", "-1", "2.5"):  # nan crashed identify; inf named everyone; nan printed invalid JSON
        for command in (["identify", face], ["verify", face, face]):
            result = CliRunner().invoke(app, [*command, "--threshold", value, "--data", str(tmp_path / "d")])
            assert result.exit_code == 2 and "--threshold" in result.output, (command, value, result.output)


def test_bad_settings_and_options_are_one_line_in_every_command(tmp_path: Path) -> None:
    video = tmp_path / "v.mp4"
    video.write_bytes(b"x")
    data = ["--data", str(tmp_path / "d")]
    cases = [
        ({"FACEREC_VIDEO_FPS": "abc"}, ["watch", str(video), *data], "FACEREC_VIDEO_FPS"),
        ({"FACEREC_VIDEO_FPS": "abc"}, ["events", "export", *data], "FACEREC_VIDEO_FPS"),
        ({"FACEREC_PHOTO_CLUSTER_MAX_FIR": "abc"}, ["photos", "index", str(tmp_path), *data], "PHOTO_CLUSTER"),
        ({"FACEREC_SHUTDOWN_TIMEOUT_S": "inf"}, ["serve", *data], "FACEREC_SHUTDOWN_TIMEOUT_S"),
        ({}, ["serve", "--log-level", "bogus", *data], "--log-level"),
    ]
    for env, command, says in cases:
        result = CliRunner().invoke(app, command, env=env)
        assert result.exit_code == 2 and says in result.output, (command, result.output)
        assert "Traceback" not in result.output


def test_eval_lfw_checks_its_pairs_file_before_writing_anything(tmp_path: Path) -> None:
    garbage, empty = tmp_path / "garbage.txt", tmp_path / "empty.txt"
    garbage.write_text("no pairs here\n")
    empty.write_text("")
    for pairs, extra in ((garbage, []), (empty, []), (garbage, ["--sweep", "a,b"])):
        out = tmp_path / "report"
        args = ["eval", "lfw", "--root", str(tmp_path), "--pairs", str(pairs), "--out", str(out), *extra]
        result = CliRunner().invoke(app, args, env={"COLUMNS": "300"})
        assert result.exit_code == 2 and "Traceback" not in result.output, result.output
        assert not out.exists()  # refused before the report folder was made


def test_db_start_and_stop_say_what_is_wrong(tmp_path: Path) -> None:
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    started = CliRunner().invoke(app, ["db", "start", "--dir", str(a_file)])
    assert started.exit_code == 1 and "is a file" in started.output and "Traceback" not in started.output
    stopped = CliRunner().invoke(app, ["db", "stop", "--dir", str(tmp_path / "typo")])
    assert stopped.exit_code == 0 and "holds no cluster: nothing to stop" in stopped.output


def test_a_fifo_named_like_a_photo_is_refused_not_read_forever(tmp_path: Path) -> None:
    import os

    fifo = tmp_path / "camera.jpg"
    os.mkfifo(fifo)  # reading it would block until a writer comes
    (tmp_path / "d").mkdir()
    result = CliRunner().invoke(app, ["identify", str(fifo), "--data", str(tmp_path / "d")])
    assert result.exit_code == 1 and "is not a regular file" in result.output, result.output


def test_subjects_export_through_a_server_and_locally(
    people_dir: Path, server: tuple[Server, str], tmp_path: Path
) -> None:
    """``facerec subjects export``: a ZIP readable by its owner only, with the subject's faces and crops, never
    over an existing file; the same locally, audited as the CLI."""
    import stat
    import zipfile

    srv, token = server
    remote = ("--server", srv.url, "--api-key", token)
    run_json("enroll", str(people_dir), *remote)  # enrolled already if the test above ran: then skipped
    elton = next(s for s in run_json("subjects", "list", *remote) if s["name"] == "elton john")
    out = tmp_path / "elton.zip"
    said = run_json("subjects", "export", elton["id"], "--out", str(out), *remote)
    assert said["counts"]["faces"] == elton["face_count"] >= 1 and said["file"] == str(out)
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    with zipfile.ZipFile(out) as z:
        faces = json.loads(z.read("faces.json"))
        assert [f["subject_id"] for f in faces] == [elton["id"]] * elton["face_count"]
        assert all(z.read(f"faces/{f['id']}.png").startswith(b"\x89PNG") for f in faces)
    again = CliRunner().invoke(app, ["subjects", "export", elton["id"], "--out", str(out), *remote])
    assert again.exit_code == 2 and "exists" in again.output
    missing = CliRunner().invoke(app, ["subjects", "export", "nobody", "--out", str(tmp_path / "n.zip"), *remote])
    assert missing.exit_code == 1 and "404" in missing.output and not (tmp_path / "n.zip").exists()

    data = str(tmp_path / "data")
    run_json("enroll", str(people_dir), "--data", data)
    ben = next(s for s in run_json("subjects", "list", "--data", data) if s["name"] == "ben afflek")
    local_out = tmp_path / "ben.zip"
    assert run_json("subjects", "export", ben["id"], "--out", str(local_out), "--data", data)["counts"]["faces"] >= 1
    with zipfile.ZipFile(local_out) as z:
        assert json.loads(z.read("subject.json"))["id"] == ben["id"]
    last = json.loads((tmp_path / "data" / "audit.log").read_text().splitlines()[-1])
    assert last["action"] == "subject.export" and last["via"] == "cli" and last["target"]["subject_id"] == ben["id"]
