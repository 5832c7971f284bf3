"""Bootstrap: the backend settings and their errors (the database password never shown), ``open_backend`` for the
embedded backend (keys without taking the data dir, the gallery lock), the PostgreSQL branch when its package is
missing, the re-index target (the staging side door while a server holds the data dir) and ``finish_pending``
through the Gallery protocol. Real SQLite and FAISS on tmp dirs; the encoder is a stand-in (no model needed)."""

from __future__ import annotations

import stat
import sys
from pathlib import Path
from typing import get_args

import numpy as np
import numpy.typing as npt
import pytest
from pydantic import ValidationError

from service.addresses import redact_url
from service.bootstrap import BackendUnavailable, open_backend, open_reindex_target
from service.config import Settings
from service.gallery import GalleryLocked, LocalGallery, NewFace, ReindexRefused, SideStaging, open_gallery
from service.reindex import finish_pending

URL = "postgresql://facerec:s3cret-pw@db.example:5433/facerec"


def test_gallery_tunables_are_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FACEREC_HNSW_STORAGE", "sq8")
    monkeypatch.setenv("FACEREC_SNAPSHOT_INTERVAL_S", "12.5")
    monkeypatch.setenv("FACEREC_HNSW_SQ8_FROM", "0")
    settings = Settings(data=tmp_path / "data", hnsw_ef_search=64, snapshot_every_changes=7)
    backend = open_backend(settings)
    try:
        gallery = backend.open_gallery()
        assert isinstance(gallery, LocalGallery)
        tunables = gallery.settings
        assert (tunables.index.hnsw_storage, tunables.index.ef_search, tunables.index.sq8_from) == ("sq8", 64, 0)
        assert (tunables.snapshot_interval_s, tunables.snapshot_every_changes) == (12.5, 7)
    finally:
        backend.close()
    with pytest.raises(ValidationError):
        Settings(hnsw_storage="int4")  # type: ignore[arg-type]  # deliberately invalid: validation is under test
    monkeypatch.delenv("FACEREC_HNSW_SQ8_FROM")
    assert Settings(data=tmp_path).hnsw_sq8_from == 500_000  # the default: sq8 from half a million faces on


def test_backend_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().vector_engine == "faiss" and Settings().database_url is None
    assert Settings(database_url="  ").database_url is None  # an empty variable is unset
    s = Settings(database_url=URL)
    assert s.vector_engine == "pgvector" and s.database_display == "postgresql://facerec:***@db.example:5433/facerec"
    assert "s3cret" not in repr(s) and "s3cret" not in str(s)
    monkeypatch.setenv("FACEREC_DATABASE_URL", URL)
    monkeypatch.setenv("FACEREC_VECTOR_BACKEND", "faiss")
    with pytest.raises(ValidationError, match="faiss is the embedded gallery") as e:
        Settings()
    assert "s3cret" not in str(e.value)
    monkeypatch.delenv("FACEREC_DATABASE_URL")
    for engine in ("pgvector", "milvus"):
        monkeypatch.setenv("FACEREC_VECTOR_BACKEND", engine)
        with pytest.raises(ValidationError, match=f"{engine} needs FACEREC_DATABASE_URL"):
            Settings()
    monkeypatch.delenv("FACEREC_VECTOR_BACKEND")
    monkeypatch.setenv("FACEREC_DATABASE_URL", "mysql://u:pw-123@h/db")
    with pytest.raises(ValidationError, match="must be a postgresql:// URL") as e:
        Settings()
    assert "pw-123" not in str(e.value)
    assert redact_url("postgresql://u@h/db") == "postgresql://u@h/db"
    assert redact_url("postgresql://u:p@[::1]:5432/db") == "postgresql://u:***@[::1]:5432/db"


def test_pgvector_build_settings_are_checked() -> None:
    s = Settings(database_url=URL, pgvector_hnsw_m=32, pgvector_ef_construction=80)
    assert (s.pgvector_hnsw_m, s.pgvector_ef_construction) == (32, 80)
    with pytest.raises(ValidationError, match="must be at least twice FACEREC_PGVECTOR_HNSW_M"):
        Settings(database_url=URL, pgvector_hnsw_m=32, pgvector_ef_construction=63)


def test_database_backend_missing_or_unavailable(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "service.pgstores", None)  # as if the package were not installed
    with pytest.raises(BackendUnavailable, match="the PostgreSQL backend is not installed") as e:
        open_backend(Settings(data=tmp_path / "data", database_url=URL))
    assert "s3cret" not in str(e.value) and "db.example:5433" in str(e.value)
    with pytest.raises(BackendUnavailable, match="milvus"):
        open_backend(Settings(data=tmp_path / "data", database_url=URL, vector_backend="milvus"))
    assert not (tmp_path / "data").exists()  # nothing was created for a database configuration


def test_embedded_backend_keys_first_then_the_gallery(tmp_path: Path) -> None:
    settings = Settings(data=tmp_path / "data")
    backend = open_backend(settings, gallery=False)
    assert backend.gallery is None and not backend.keys.has_active()
    key, token = backend.keys.create(scope="admin", name="ops")
    backend.audit.record("key.create", actor="local", target={"key_id": key.id})
    gallery = backend.open_gallery()
    assert backend.open_gallery() is gallery
    subject = gallery.create_subject(name="a")
    with pytest.raises(GalleryLocked):  # one process per data dir
        open_backend(settings)
    second = open_backend(settings, gallery=False)  # the key store alone does not need the data dir's lock
    found = second.keys.authenticate(token)
    assert found is not None and found.id == key.id
    second.close()
    backend.close()
    again = open_backend(settings)
    assert again.gallery is not None and again.gallery.get_subject(subject.id).name == "a"
    assert [r["action"] for r in again.audit.tail(5)] == ["key.create"]
    again.close()


def _enrol_with_crops(data: Path, model: str, n: int) -> list[int]:
    rng = np.random.default_rng(5)
    vecs = rng.standard_normal((n, 128)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    with open_gallery(data, auto_maintain=False) as g:
        sid = g.create_subject(name="p").id
        crops = rng.integers(0, 256, (n, 160, 160, 3), dtype=np.uint8)
        return [r.id for r in g.add_faces(sid, [NewFace(v, model, crop=c) for v, c in zip(vecs, crops, strict=True)])]


def test_reindex_target_while_a_server_holds_the_data_dir(tmp_path: Path) -> None:
    data = tmp_path / "data"
    settings = Settings(data=data)
    with pytest.raises(ReindexRefused, match="no gallery"), open_reindex_target(settings):
        pass
    ids = _enrol_with_crops(data, "model-a", 3)
    with open_reindex_target(settings) as target:  # nobody holds it: the gallery itself, which can switch
        assert target.gallery is not None and target.staging is target.gallery
        with pytest.raises(ReindexRefused, match="another `facerec reindex`"), open_reindex_target(settings):
            pass
    with open_gallery(data, auto_maintain=False) as serving:  # a server holds it: stage through the side door
        with open_reindex_target(settings) as target:
            assert target.gallery is None and isinstance(target.staging, SideStaging)
            assert target.staging.reindex_counts("model-b")["todo"] == 3
            assert target.staging.stage_embeddings("model-b", ids[:1], np.eye(128, dtype=np.float32)[:1]) == 1
        assert serving.reindex_counts("model-b")["staged"] == 1


class StandInEncoder:
    """A model id and an encode step (the Encoder protocol); maps every crop to a unit vector of its mean."""

    model_id = "model-b"

    def __init__(self) -> None:
        self.crops = 0

    def encode(self, crops: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
        self.crops += len(crops)
        out = np.zeros((len(crops), 128), np.float32)
        out[np.arange(len(crops)), crops.reshape(len(crops), -1).mean(axis=1).astype(int) % 128] = 1.0
        return out


def test_finish_pending_embeds_the_rest_and_switches(tmp_path: Path) -> None:
    data = tmp_path / "data"
    ids = _enrol_with_crops(data, "model-a", 4)
    encoder = StandInEncoder()
    with open_gallery(data, auto_maintain=False) as g:
        assert finish_pending(g, encoder) == 0 and encoder.crops == 0  # nothing staged: nothing to do
        g.stage_embeddings("model-b", ids[:2], np.eye(128, dtype=np.float32)[:2])
        assert finish_pending(g, encoder) == 4
        assert encoder.crops == 2  # only the faces not staged yet were embedded
        assert g.stats().faces_by_model == {"model-b": 4}


def test_cli_configuration_errors_are_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from service.cli import app as cli_app

    data = str(tmp_path / "data")
    runner = CliRunner()
    monkeypatch.setenv("FACEREC_VECTOR_BACKEND", "pgvector")
    for argv in (["keys", "list", "--data", data], ["audit", "tail", "--data", data], ["subjects", "list"]):
        result = runner.invoke(cli_app, argv)
        assert result.exit_code == 2, (argv, result.output)
        assert "FACEREC_DATABASE_URL" in result.output and "Traceback" not in result.output
    monkeypatch.delenv("FACEREC_VECTOR_BACKEND")
    monkeypatch.setenv("FACEREC_DATABASE_URL", "postgresql://facerec:pw-4242@127.0.0.1:1/facerec")
    monkeypatch.setitem(sys.modules, "service.pgstores", None)
    result = runner.invoke(cli_app, ["keys", "list", "--data", data])
    assert result.exit_code == 1 and result.output.startswith("error: backend_unavailable: "), result.output
    assert "pw-4242" not in result.output and "127.0.0.1:1" in result.output


FLOAT_SETTINGS = sorted(
    name for name, field in Settings.model_fields.items() if float in (field.annotation, *get_args(field.annotation))
)


@pytest.mark.parametrize("value", ["inf", "Infinity", "nan"])
def test_no_setting_takes_a_number_that_is_not_finite(value: str) -> None:
    """``inf`` passed every setting without an upper bound: FACEREC_BATCH_MAX_WAIT_MS=inf killed the encoder
    thread at its first wait (OverflowError; requests then hung), FACEREC_MALLOC_TRIM_S=inf the trimmer's."""
    from typer.testing import CliRunner

    from service.cli import app as cli_app

    assert "batch_max_wait_ms" in FLOAT_SETTINGS and "malloc_trim_s" in FLOAT_SETTINGS
    for name in FLOAT_SETTINGS:
        variable = f"FACEREC_{name.upper()}"
        result = CliRunner().invoke(cli_app, ["keys", "list", "--data", "/nonexistent"], env={variable: value})
        assert result.exit_code == 2, (variable, result.output)
        assert result.output.startswith(f"error: {variable}: ") and len(result.output.splitlines()) == 1, result.output


def test_a_new_data_dir_is_private_to_its_user(tmp_path: Path) -> None:
    """It holds face embeddings and crops, camera URLs with their credentials and the keys' hashes: it was made
    with the umask's mode (0755), and every local user could read the gallery and keys.db."""
    data = tmp_path / "new" / "data"
    open_backend(Settings(data=data), gallery=False).close()
    assert stat.S_IMODE(data.stat().st_mode) == 0o700 and (data / "keys.db").exists()
    existing = tmp_path / "shared"
    existing.mkdir()
    existing.chmod(0o750)
    open_backend(Settings(data=existing), gallery=False).close()
    assert stat.S_IMODE(existing.stat().st_mode) == 0o750  # a folder that exists keeps the mode its owner gave it
    from service.pgstores.media import replica_id
    from service.video.jobstore import SQLiteJobStore

    replica = tmp_path / "replica" / "data"  # the PostgreSQL backend's: its replica id and video uploads
    replica_id(replica)
    assert stat.S_IMODE(replica.stat().st_mode) == 0o700
    jobs = SQLiteJobStore(existing)
    try:
        _, upload = jobs.new_path()  # videos of people: private also in a data dir that is not
    finally:
        jobs.close()
    assert stat.S_IMODE(upload.parent.stat().st_mode) == 0o700


def test_a_setting_set_to_nothing_is_unset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``FACEREC_DATA=`` (an empty line in an .env file) made the current directory the data dir, and
    ``FACEREC_HOST=`` listened on every interface, where the default is 127.0.0.1."""
    from typer.testing import CliRunner

    from service.cli import app as cli_app

    monkeypatch.chdir(tmp_path)
    empty = {"FACEREC_DATA": "", "FACEREC_HOST": "", "FACEREC_PORT": "", "FACEREC_THRESHOLD": ""}
    for name, value in empty.items():
        monkeypatch.setenv(name, value)
    settings = Settings()
    assert (settings.data, settings.host, settings.port, settings.threshold) == (Path("data"), "127.0.0.1", 8000, None)
    created = CliRunner().invoke(cli_app, ["keys", "create", "--scope", "admin"], env=empty)
    assert created.exit_code == 0, created.output
    assert (tmp_path / "data" / "keys.db").exists() and not (tmp_path / "keys.db").exists()


def test_a_data_dir_under_home_is_there(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``FACEREC_DATA=~/facerec-data`` (an .env file, a service unit: no shell to expand it) made a folder named
    ``~`` in the current directory the data dir."""
    from typer.testing import CliRunner

    from service.cli import app as cli_app

    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setenv("HOME", str(tmp_path))
    env = {"FACEREC_DATA": "~/facerec-data", "HOME": str(tmp_path)}
    assert CliRunner().invoke(cli_app, ["keys", "create", "--scope", "admin"], env=env).exit_code == 0
    assert CliRunner().invoke(cli_app, ["keys", "create", "--scope", "admin", "--data=~/other"]).exit_code == 0
    assert (tmp_path / "facerec-data" / "keys.db").exists() and (tmp_path / "other" / "keys.db").exists()
    assert list(work.iterdir()) == []


def test_a_database_url_shows_no_secret_anywhere() -> None:
    """The password in the user info or in the query (libpq takes both) and the fragment are hidden."""
    assert redact_url("postgresql://u@h/db?password=s3cret&sslmode=require") == (
        "postgresql://u@h/db?password=***&sslmode=require"
    )
    assert redact_url("postgresql://u:s3cret@h:5433/db#s3cret") == "postgresql://u:***@h:5433/db"
    assert redact_url("postgresql://u:s3cret@h:99999/db") == "***@h:99999/db"  # a port that does not parse
