"""Fine-tuned model directories in the registry, the service and the CLI; stored face crops; ``reindex``.

The model directory under test is written with the training package's ``save_model_dir``: the pretrained
network with its bottleneck negated (Dense kernel, BatchNorm beta and moving mean), so it maps every crop to
exactly minus the pretrained embedding. Distances *within* the new model are those of the pretrained one (so
identification must keep working after a re-index), but an embedding left over from the old model is at
distance 2 from the new one: a face that reindex failed to re-embed could not be found. (Not a trained model:
a few real training steps would cost more than this test's time budget; the training helper tests training.)
Real weights, real MTCNN, real FAISS on disk, a real server process.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from typer.testing import CliRunner

from bench.reindex import write_negated_model
from embeddings import weights
from embeddings.models import UnknownModel, list_models, resolve_model
from service import recognition
from service.cli import app as cli_app
from service.config import Settings
from service.gallery import ReindexIncomplete, open_gallery
from service.gallery.crops import decode_crop
from service.reindex import ReindexRefused, _encoder, finish_pending, reindex
from tests.service.helpers import ENROLLED, UNKNOWN, images
from tests.service.server import Server

pytestmark = pytest.mark.slow

MODEL = "ft-negated-test-20261123000000"
TRAIN_PER_PERSON = 3


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory, weights_path: Path, dataset: Path) -> Iterator[Path]:
    """A cache dir holding the model dir; its ``weights/`` and ``datasets/`` link to the real cache's."""
    root = tmp_path_factory.mktemp("cache")
    note = "test fixture: the pretrained network with its bottleneck negated, not trained"
    write_negated_model(root, MODEL, weights_path, note=note)
    mp = pytest.MonkeyPatch()
    mp.setenv("FACEREC_CACHE", str(root))
    yield root
    mp.undo()


@pytest.fixture(scope="module")
def encoders(cache: Path) -> dict[str, Any]:
    """The real encode step per model id, built once (as ``reindex`` builds it) and reused by every run."""
    built: dict[str, Any] = {}

    def factory(settings: Settings, model_id: str) -> Any:
        if model_id not in built:
            built[model_id] = _encoder(settings, model_id)
        return built[model_id]

    return {"factory": factory, "built": built}


def _enrol(data: Path, analyzer: Any, dataset: Path, *, store_crop: bool = True) -> dict[str, str]:
    with open_gallery(data) as g:
        ids = {}
        for person in ENROLLED:
            sid = g.create_subject(name=person).id
            enrolled = 0
            for photo in images(dataset, "train", person):  # the first photos that pass the quality gate
                result = recognition.enroll(
                    analyzer=analyzer, gallery=g, subject_id=sid, images=[photo.read_bytes()], store_crop=store_crop
                )
                enrolled += len(result.faces)
                if enrolled == TRAIN_PER_PERSON:
                    break
            assert enrolled == TRAIN_PER_PERSON
            ids[person] = sid
    return ids


def _faces(data: Path) -> list[tuple[int, str, bytes]]:
    conn = sqlite3.connect(data / "gallery.sqlite3")
    try:
        return [(int(i), str(m), bytes(e)) for i, m, e in conn.execute("SELECT id, model_id, embedding FROM faces")]
    finally:
        conn.close()


def test_registry_and_models_list(cache: Path) -> None:
    info = resolve_model(MODEL)
    assert info.kind == "fine-tuned" and info.threshold == 1.075 and info.weights_path is not None
    assert info.weights_path.is_file()
    assert resolve_model(weights.MODEL_ID).threshold == pytest.approx(1.075)
    with pytest.raises(UnknownModel, match="known models"):
        resolve_model("no-such-model")
    (cache / "models" / "broken").mkdir()
    models, broken = list_models()
    assert [m.model_id for m in models] == [weights.MODEL_ID, MODEL]
    assert "card.json" in broken["broken"]
    out = CliRunner().invoke(cli_app, ["models", "list", "--json"])
    assert out.exit_code == 0, out.output
    listed = json.loads(out.output)
    assert [m["model_id"] for m in listed["models"]] == [weights.MODEL_ID, MODEL]
    assert listed["models"][1]["threshold"] == 1.075 and "broken" in listed["invalid"]
    assert Settings(model=MODEL).match_threshold == 1.075


def test_reindex_resumes_switches_and_the_service_serves_the_new_model(
    cache: Path, dataset: Path, analyzer: Any, encoders: dict[str, Any], tmp_path: Path
) -> None:
    data = tmp_path / "data"
    subjects = _enrol(data, analyzer, dataset)
    total = len(ENROLLED) * TRAIN_PER_PERSON
    before = {fid: np.frombuffer(e, "<f4") for fid, _, e in _faces(data)}
    assert {m for _, m, _ in _faces(data)} == {weights.MODEL_ID}
    with sqlite3.connect(data / "gallery.sqlite3") as conn:  # every face has its 160x160 crop
        crops = dict(conn.execute("SELECT face_id, png FROM face_crops").fetchall())
    assert set(crops) == set(before)
    assert decode_crop(crops[min(crops)]).shape == (160, 160, 3)

    settings = Settings(data=data)
    factory = encoders["factory"]
    # interrupted after 5 faces: nothing switched, the old model still serves
    first = reindex(settings, MODEL, batch_size=2, limit=5, encoder_factory=factory)
    assert (first.state, first.embedded, first.staged) == ("partial", 5, 5)
    assert {m for _, m, _ in _faces(data)} == {weights.MODEL_ID}
    with open_gallery(data) as g:
        with pytest.raises(ReindexIncomplete):
            g.switch_model(MODEL)
        probe = analyzer.single_face(images(dataset, "val", "madonna")[0].read_bytes()).embedding
        assert g.search(probe[None], model_id=weights.MODEL_ID, top_k=1)[0][0].subject_name == "madonna"
    # resumed: only the rest is embedded, then every face switches
    second = reindex(settings, MODEL, batch_size=4, encoder_factory=factory)
    assert (second.state, second.embedded, second.switched) == ("switched", total - 5, total)
    after = _faces(data)
    assert len(after) == total and {m for _, m, _ in after} == {MODEL}
    for fid, _, e in after:  # really re-embedded with the new model (which negates the old embedding)
        assert np.linalg.norm(np.frombuffer(e, "<f4") + before[fid]) < 1e-3
    with sqlite3.connect(data / "gallery.sqlite3") as conn:
        assert conn.execute("SELECT count(*) FROM face_embeddings").fetchone()[0] == 0
    audit = [json.loads(line) for line in (data / "audit.log").read_text().splitlines()]
    assert [(a["action"], a.get("count")) for a in audit if a["action"].startswith("model.")] == [
        ("model.reindex", 5),
        ("model.reindex", total - 5),
        ("model.switch", total),
    ]
    assert reindex(settings, MODEL, encoder_factory=factory).state == "current"

    # the model directory loads in a real server selected by FACEREC_MODEL; it names the right people
    server = Server(data, env={"FACEREC_MODEL": MODEL, "FACEREC_CACHE": str(cache)}).start(timeout=120)
    try:
        ready = httpx.get(f"{server.url}/readyz").json()
        assert ready["model_id"] == MODEL and ready["threshold"] == 1.075
        for person in ENROLLED:
            photo = images(dataset, "val", person)[0].read_bytes()
            body = httpx.post(f"{server.url}/v1/identify", files={"image": photo}, timeout=60).json()
            assert body["model_id"] == MODEL
            assert body["faces"][0]["match"]["subject_id"] == subjects[person], body

        # reindex back to the pretrained model while the server runs: it only stages, the server keeps serving
        back = reindex(settings, weights.MODEL_ID, batch_size=8, encoder_factory=factory)
        assert (back.state, back.staged, back.switched) == ("staged", total, 0)
        photo = images(dataset, "val", "elton_john")[0].read_bytes()
        body = httpx.post(f"{server.url}/v1/identify", files={"image": photo}, timeout=60).json()
        assert body["faces"][0]["match"]["subject_id"] == subjects["elton_john"]
        extra = [p.read_bytes() for p in images(dataset, "train", "jerry_seinfeld")[-3:]]
        r = httpx.post(
            f"{server.url}/v1/subjects/{subjects['jerry_seinfeld']}/faces",
            files=[("images", b) for b in extra],
            data={"face": "largest"},
            timeout=60,
        )
        assert r.status_code == 201 and {f["model_id"] for f in r.json()["faces"]} == {MODEL}, r.text
        added = len(r.json()["faces"])
        assert added == 3, r.text
    finally:
        server.stop()

    # the next start with the pretrained model embeds the face enrolled meanwhile and switches
    with open_gallery(data) as g:
        assert finish_pending(g, analyzer) == total + added
        assert g.stats().faces_by_model == {weights.MODEL_ID: total + added}
        for person in [*ENROLLED, UNKNOWN]:
            photo = images(dataset, "val", person)[0].read_bytes()
            result = recognition.identify(analyzer=analyzer, gallery=g, image=photo, threshold=None, top_k=3)
            match = result.faces[0].match
            if person == UNKNOWN:
                assert match is None or match.distance > 0.9
            else:
                assert match is not None and match.subject_id == subjects[person]


def test_reindex_refuses_without_crops_and_erasure_removes_crops(
    cache: Path, dataset: Path, analyzer: Any, encoders: dict[str, Any], tmp_path: Path
) -> None:
    data = tmp_path / "nocrops"
    _enrol(data, analyzer, dataset, store_crop=False)
    with pytest.raises(ReindexRefused, match="12 of 12 faces have no stored crop"):
        reindex(Settings(data=data), MODEL, encoder_factory=encoders["factory"])
    out = CliRunner().invoke(cli_app, ["reindex", "--model", MODEL, "--data", str(data)])
    assert out.exit_code == 1 and "12 of 12 faces have no stored crop" in out.output
    out = CliRunner().invoke(cli_app, ["reindex", "--model", "nope", "--data", str(data)])
    assert out.exit_code == 1 and "unknown_model" in out.output
    assert not (data / "audit.log").exists()
    with open_gallery(data) as g:
        assert g.stats().faces_by_model == {weights.MODEL_ID: 12}

    data = tmp_path / "erase"
    subjects = _enrol(data, analyzer, dataset)
    with open_gallery(data) as g:
        faces = g.list_faces(subjects["madonna"])
        pngs = [g.store.crop_png(f.id) for f in faces]
        assert all(pngs) and all(10_000 < len(p or b"") < 60_000 for p in pngs), [len(p or b"") for p in pngs]
        g.stage_embeddings(MODEL, [faces[0].id], np.eye(128, dtype=np.float32)[:1])
        g.delete_face(faces[0].id)
        g.delete_subject(subjects["madonna"])
        assert all(g.store.crop_png(f.id) is None for f in faces)
        with sqlite3.connect(data / "gallery.sqlite3") as conn:
            assert conn.execute("SELECT count(*) FROM face_embeddings").fetchone()[0] == 0
        raw = (data / "gallery.sqlite3").read_bytes() + (data / "gallery.sqlite3-wal").read_bytes()
        for png in pngs:
            assert png is not None and png[100:164] not in raw


def test_unknown_model_fails_the_model_load(cache: Path, tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from service.app import create_app

    app = create_app(Settings(data=tmp_path / "data", model="no-such-model"))
    with TestClient(app) as client:
        assert client.portal is not None  # the client's event loop runs while the `with` block does
        client.portal.call(app.state.model_loaded.wait)
        r = client.get("/readyz")
        assert r.status_code == 503 and r.json()["model"] is False
        assert app.state.load_error == "the model failed to load: UnknownModel"
