"""The serving path never loads TensorFlow or Keras: a real ``facerec serve`` process after real detect, enrol,
identify and verify requests, and the CLI's local identify, verify and enrol commands.

Each process runs with ``tests/service/modules_probe`` on ``PYTHONPATH``: its ``sitecustomize`` writes the names
in ``sys.modules`` at exit; while the server runs, ``/proc/<pid>/maps`` is read for TensorFlow's shared libraries.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.service.helpers import images
from tests.service.server import REPO, Server

PROBE = Path(__file__).parent / "modules_probe"
HEAVY = ("tensorflow", "keras", "tf_keras", "mtcnn", "keras_facenet", "nncf", "torch")
"""Top-level packages the serving path must not import (the ``convert`` extra's)."""


def heavy_loaded(modules: list[str]) -> list[str]:
    return sorted({m.split(".")[0] for m in modules} & set(HEAVY))


def probe_env(out: Path) -> dict[str, str]:
    return {"PYTHONPATH": f"{REPO}{os.pathsep}{PROBE}", "FACEREC_TEST_MODULES_OUT": str(out)}


def mapped_libraries(pid: int) -> set[str]:
    with open(f"/proc/{pid}/maps") as f:
        return {line.split()[-1] for line in f if "/" in line}


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="reads /proc/<pid>/maps")
def test_server_serves_without_loading_tensorflow(tmp_path: Path, dataset: Path) -> None:
    out = tmp_path / "modules.json"
    server = Server(tmp_path / "data", env=probe_env(out)).start()
    try:
        assert server.proc is not None
        a, b = images(dataset, "val", "ben_afflek")[:2]
        url = server.url
        detect = httpx.post(f"{url}/v1/detect", files={"image": a.read_bytes()}, timeout=60)
        assert detect.status_code == 200 and len(detect.json()["faces"]) == 1
        subject = httpx.post(f"{url}/v1/subjects", json={"name": "Ben"}, timeout=60).json()
        enrolled = httpx.post(
            f"{url}/v1/subjects/{subject['id']}/faces", files=[("images", a.read_bytes())], timeout=60
        )
        assert enrolled.status_code == 201, enrolled.text
        for _ in range(3):
            identify = httpx.post(f"{url}/v1/identify", files={"image": b.read_bytes()}, timeout=60)
            assert identify.status_code == 200
            assert identify.json()["faces"][0]["match"]["name"] == "Ben"
        verify = httpx.post(
            f"{url}/v1/verify", files={"image_a": a.read_bytes(), "image_b": b.read_bytes()}, timeout=60
        )
        assert verify.status_code == 200 and verify.json()["match"] is True
        metrics = httpx.get(f"{url}/metrics", timeout=30).text
        values = {
            line.split()[0]: float(line.split()[1])
            for line in metrics.splitlines()
            if line.startswith("facerec_detector")
        }
        # 7 detections so far (detect, enrol, 3 identify, verify's 2), each several network calls
        assert values["facerec_detector_network_jobs"] >= 7 * 3
        assert 0 < values["facerec_detector_network_calls"] <= values["facerec_detector_network_jobs"]
        assert values["facerec_detector_queue_calls"] == 0
        libraries = mapped_libraries(server.proc.pid)
        assert any("openvino" in lib for lib in libraries)  # the probe sees the real inference libraries
        # TensorFlow's own libraries; OpenVINO's TensorFlow *frontend* (openvino/frontend/tensorflow/...,
        # libopenvino_tensorflow_frontend) is OpenVINO's, loaded with it, and links no TensorFlow
        assert [lib for lib in libraries if "tensorflow" in lib and "/openvino/" not in lib] == []
    finally:
        server.stop()
    modules = json.loads(out.read_text())
    assert "embeddings.mtcnn_openvino" in modules and "fastapi" in modules
    assert heavy_loaded(modules) == []


@pytest.mark.slow
def test_cli_local_commands_do_not_load_tensorflow(tmp_path: Path, dataset: Path) -> None:
    a, b = images(dataset, "val", "ben_afflek")[:2]
    people = tmp_path / "people" / "ben_afflek"
    people.mkdir(parents=True)
    (people / a.name).write_bytes(a.read_bytes())
    data = tmp_path / "data"
    commands = {
        "enroll": ["enroll", str(tmp_path / "people"), "--data", str(data)],
        "identify": ["identify", str(b), "--data", str(data), "--json"],
        "verify": ["verify", str(a), str(b), "--data", str(data), "--json"],
    }
    for name, args in commands.items():
        out = tmp_path / f"{name}.json"
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **probe_env(out)}
        run = subprocess.run(
            [sys.executable, "-m", "service.cli", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
        )
        assert run.returncode == 0, run.stderr[-2000:]
        modules = json.loads(out.read_text())
        assert "embeddings.mtcnn_openvino" in modules, name
        assert heavy_loaded(modules) == [], name
