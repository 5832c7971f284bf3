"""The MTCNN networks converted to OpenVINO: built from the package's weight arrays without TensorFlow, cached by
sha256, numerically the package's networks (compared with the TensorFlow graphs of the same weights)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from embeddings import mtcnn_openvino
from embeddings.errors import WeightsUnavailable
from embeddings.mtcnn_algorithm import crop_and_resize, normalize

REPO = Path(__file__).resolve().parents[2]


def test_conversion_needs_no_tensorflow_and_is_cached(tmp_path: Path) -> None:
    """In a fresh process: the IR is built (TensorFlow, Keras and the mtcnn package never imported), written once,
    and a second call reuses it."""
    code = r"""
import json, sys
from pathlib import Path
from embeddings import mtcnn_openvino
root = Path(sys.argv[1])
first = mtcnn_openvino.ensure_ir(root)
stamp = (first / "pnet.bin").stat().st_mtime_ns
second = mtcnn_openvino.ensure_ir(root)
print(json.dumps({"dir": str(first), "same": first == second, "untouched": (second / "pnet.bin").stat().st_mtime_ns
                  == stamp, "loaded": [m for m in ("tensorflow", "keras", "mtcnn") if m in sys.modules]}))
"""
    out = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["loaded"] == []
    assert result["same"] and result["untouched"]
    folder = Path(result["dir"])
    assert folder == mtcnn_openvino.ir_dir(tmp_path)
    assert mtcnn_openvino.weights_digest() in str(folder)
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        ["meta.json"] + [f"{n}.{s}" for n in ("pnet", "rnet", "onet") for s in ("xml", "bin")]
    )


def test_a_corrupt_cached_model_is_rebuilt(tmp_path: Path) -> None:
    folder = mtcnn_openvino.ensure_ir(tmp_path)
    good = (folder / "onet.bin").read_bytes()
    (folder / "onet.bin").write_bytes(good[:1000])
    assert not mtcnn_openvino.ir_ready(folder)
    again = mtcnn_openvino.ensure_ir(tmp_path)
    assert again == folder and (folder / "onet.bin").read_bytes() == good


def test_source_files_are_verified(tmp_path: Path) -> None:
    source = mtcnn_openvino.source_dir()
    assert source is not None
    fake = tmp_path / "weights"
    shutil.copytree(source, fake)
    (fake / "rnet.lz4").write_bytes(b"not the package's weights")
    with pytest.raises(WeightsUnavailable, match=r"rnet\.lz4 has sha256"):
        mtcnn_openvino.ensure_ir(tmp_path / "cache", source=fake)
    assert not mtcnn_openvino.ir_dir(tmp_path / "cache").exists()


def test_no_cache_and_no_package_says_how_to_convert(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mtcnn_openvino, "source_dir", lambda: None)
    with pytest.raises(WeightsUnavailable, match="convert"):
        mtcnn_openvino.ensure_ir(tmp_path)


@pytest.fixture(scope="module")
def networks(tmp_path_factory: pytest.TempPathFactory) -> mtcnn_openvino.OpenVinoNetworks:
    return mtcnn_openvino.OpenVinoNetworks(tmp_path_factory.mktemp("ir"))


@pytest.fixture(scope="module")
def tf_networks():
    from embeddings.mtcnn_compiled import CompiledMTCNN

    return CompiledMTCNN()


@pytest.fixture(scope="module")
def photo(celebrity_root: Path) -> np.ndarray:
    path = sorted((celebrity_root / "val").rglob("*.jpg"))[0]
    bgr = cv2.imread(str(path))
    assert bgr is not None, path
    return np.ascontiguousarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))


def test_pnet_levels_match_tensorflow_area_resize_and_network(
    networks: mtcnn_openvino.OpenVinoNetworks, tf_networks, photo: np.ndarray
) -> None:
    """OpenCV INTER_AREA on the float image + the OpenVINO PNet (levels run concurrently) == TF AREA resize + the
    Keras PNet, level by level, the full-size level included."""
    sizes = [photo.shape[:2], (300, 200), (151, 97), (24, 13), (12, 12)]
    mine = networks.pnet(networks.prepare(photo), sizes)
    theirs = tf_networks.pnet(tf_networks.prepare(photo), sizes)
    assert len(mine) == len(theirs) == len(sizes)
    for (reg, prob), (want_reg, want_prob) in zip(mine, theirs, strict=True):
        assert reg.shape == want_reg.shape and reg.shape[2] == 4
        assert prob.shape == want_prob.shape == reg.shape[:2]
        np.testing.assert_allclose(reg, want_reg, atol=1e-4)
        np.testing.assert_allclose(prob, want_prob, atol=1e-4)


def test_crops_rnet_and_onet_match_tensorflow(
    networks: mtcnn_openvino.OpenVinoNetworks, tf_networks, photo: np.ndarray
) -> None:
    """crop_and_resize == tf.image.crop_and_resize (boxes inside, across and outside the image), and RNet/ONet
    outputs agree, on the normalised image and on the uint8 source."""
    import tensorflow as tf

    coords = np.asarray(
        [[0.1, 0.2, 0.5, 0.6], [-0.1, -0.05, 0.3, 1.2], [0.9, 0.9, 1.4, 1.3], [0.3, 0.3, 0.3, 0.3]], np.float32
    )
    normalized = normalize(photo)
    for side in (24, 48):
        want = tf.image.crop_and_resize(normalized[None], coords, np.zeros(len(coords), np.int32), (side, side))
        np.testing.assert_allclose(crop_and_resize(normalized, coords, side), want.numpy(), atol=1e-5)
    for mine, theirs in zip(
        networks.rnet(networks.prepare(photo), coords),
        tf_networks._run_padded(tf_networks._rnet, tf_networks.prepare(photo), coords),
        strict=True,
    ):
        np.testing.assert_allclose(mine, theirs, atol=1e-4)
    for mine, theirs in zip(
        networks.onet_source(photo, coords),
        tf_networks.onet_source(tf_networks.prepare_source(photo), coords),
        strict=True,
    ):
        np.testing.assert_allclose(mine, theirs, atol=1e-4)


def test_many_image_sizes_do_not_grow_memory(networks: mtcnn_openvino.OpenVinoNetworks, photo: np.ndarray) -> None:
    """PNet sees a new input shape per image size and pyramid level. The CPU plugin keeps prepared kernels per
    shape; at its default (5,000 shapes of ~0.6 MiB each) 600 new sizes grew the process by ~100 MiB. Capped at
    :data:`RUNTIME_CACHE_SHAPES`, the memory stays level."""

    def rss_mib() -> float:
        return int(Path("/proc/self/status").read_text().split("VmRSS:")[1].split()[0]) / 1024

    prepared = networks.prepare(photo)
    sizes = [(40 + i % 150, 40 + (i * 7) % 150) for i in range(700)]
    networks.pnet(prepared, sizes[:100])  # the cache fills to its cap
    before = rss_mib()
    for start in range(100, len(sizes), 50):
        networks.pnet(prepared, sizes[start : start + 50])
    assert rss_mib() - before < 50, f"{rss_mib() - before:.0f} MiB more after 600 new input shapes"
