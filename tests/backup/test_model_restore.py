"""A gallery embedded with a fine-tuned model, calibrated with its own tables and cohort, backed up and restored
on a "new machine" (a fresh data dir and a fresh FACEREC_CACHE holding only what ``facerec weights fetch`` puts
there): the restored server loads the model from the restored cache and gives the same answers, calibrated the
same way. Real weights, MTCNN, SQLite and server processes.

The model is the pretrained network with its bottleneck negated (bench/reindex.py ``write_negated_model``, as
tests/service/test_models_reindex.py uses it): a registered model directory whose embeddings are at distance 2
from the pretrained model's, so a restored server that fell back to another model would match nobody. Its tables
are fitted on random embeddings of 20 people: real tables of this model id, not a measurement."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from bench.reindex import write_negated_model
from service.gallery.calibration import fit_calibration, sample_people, user_tables_dir
from service.gallery.normalisation import SUFFIX, fit_normalisation
from tests.service.helpers import ENROLLED, images
from tests.service.server import REPO, Server

pytestmark = pytest.mark.slow

MODEL = "ft-negated-backup-20261207000000"


def _cli(*args: str, cache: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FACEREC_")}
    env |= {"PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "2", "FACEREC_CACHE": str(cache), "FACEREC_MODEL": MODEL}
    cmd = [sys.executable, "-m", "service.cli", *args]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def _env(cache: Path) -> dict[str, str]:
    """A server's settings: the model and cache, a false-identification target (the tables are used)."""
    return {
        "FACEREC_CACHE": str(cache),
        "FACEREC_MODEL": MODEL,
        "FACEREC_MAX_FIR": "0.01",
        "FACEREC_RATE_LIMIT_PER_MINUTE": "0",
    }


def _calibrate(cache: Path) -> None:
    """Tables and a cohort of MODEL in ``cache``, fitted on random unit embeddings of 20 people."""
    rng = np.random.default_rng(0)
    x = np.repeat(rng.standard_normal((20, 128)), 6, axis=0) + 0.3 * rng.standard_normal((120, 128))
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    labels = np.repeat(np.arange(20), 6)
    fit_calibration(x, labels, model_id=MODEL, source="test").save(user_tables_dir(cache) / f"{MODEL}.npz")
    norm = fit_normalisation(sample_people(x, labels), model_id=MODEL, source="test")
    norm.save(user_tables_dir(cache) / f"{MODEL}{SUFFIX}")


def _identify(client: httpx.Client, dataset: Path) -> list[tuple[Any, ...]]:
    """Per val photo of each enrolled person: the match (subject), its distance, the model and how the threshold
    was chosen."""
    out = []
    for person in ENROLLED:
        for photo in images(dataset, "val", person)[:2]:
            r = client.post("/v1/identify", files={"image": photo.read_bytes()})
            assert r.status_code == 200, r.text
            body = r.json()
            face = body["faces"][0]
            match = (face["match"] or {}).get("subject_id")
            best = round(face["candidates"][0]["distance"], 4)
            out.append((match, best, body["model_id"], body["threshold_source"], body["threshold_scale"]))
    return out


def test_a_gallery_of_a_fine_tuned_model_is_served_after_a_restore_on_a_new_machine(
    tmp_path: Path, weights_path: Path, celebrity_root: Path
) -> None:
    old_cache, new_cache = tmp_path / "old-cache", tmp_path / "new-cache"
    old_cache.mkdir()
    write_negated_model(old_cache, MODEL, weights_path, note="test fixture: the bottleneck negated, not trained")
    _calibrate(old_cache)
    server = Server(tmp_path / "data", env=_env(old_cache)).start()
    try:
        with httpx.Client(base_url=server.url, timeout=120) as client:
            for person in ENROLLED:
                sid = client.post("/v1/subjects", json={"name": person}).json()["id"]
                for photo in images(celebrity_root, "train", person)[:3]:
                    files = [("images", (photo.name, photo.read_bytes(), "image/jpeg"))]
                    assert client.post(f"/v1/subjects/{sid}/faces", files=files).status_code in (200, 201)
            answers = _identify(client, celebrity_root)
            taken = _cli("backup", str(tmp_path / "b"), "--data", str(server.data), "--json", cache=old_cache)
    finally:
        server.stop()
    assert taken.returncode == 0, taken.stderr
    assert {m for _, _, m, _, _ in answers} == {MODEL} and answers[0][4] == "normalised"  # the cohort is used
    assert sum(match is not None for match, *_ in answers) >= len(answers) - 1

    new_cache.mkdir()  # the new machine: `facerec weights fetch` gives the pretrained weights and nothing else
    for name in ("weights", "datasets"):
        (new_cache / name).symlink_to(old_cache / name, target_is_directory=True)
    put = _cli("restore", str(tmp_path / "b"), "--data", str(tmp_path / "restored"), "--json", cache=new_cache)
    assert put.returncode == 0, put.stderr
    again = Server(tmp_path / "restored", env=_env(new_cache)).start()
    try:
        with httpx.Client(base_url=again.url, timeout=120) as client:
            assert _identify(client, celebrity_root) == answers
    finally:
        again.stop()
    written = json.loads(put.stdout)["cache_written"]
    assert written == [
        f"calibration/{MODEL}{SUFFIX}",
        f"calibration/{MODEL}.npz",
        f"models/{MODEL}/card.json",
        f"models/{MODEL}/model.weights.h5",
    ]
    for rel in written:
        assert (new_cache / rel).read_bytes() == (old_cache / rel).read_bytes()
