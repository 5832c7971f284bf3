"""The fast encoder paths (OpenVINO bf16 and int8) against the fp32 reference, on the real weights and faces."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from embeddings import AnalyzerConfig, FaceAnalyzer, pairwise_distances
from embeddings.encoders import PRECISIONS, create_encoder
from embeddings.facenet import BatchedEncoder, FaceNetEncoder
from embeddings.facenet_openvino import META_FILE, OpenVinoEncoder, ensure_ir, ir_dir
from tests.conftest import image_files

pytestmark = pytest.mark.slow  # the real weights, converted to OpenVINO

FAST = ["bf16", "int8"]
COSINE_FLOOR = {"bf16": 0.999, "int8": 0.985}
"""Worst per-face cosine to fp32 allowed (measured: bf16 0.9998, int8 0.989 on these 117 faces)."""

Split = tuple[npt.NDArray[np.uint8], list[str]]


def _crops(analyzer: FaceAnalyzer, folder: Path) -> Split:
    crops, labels = [], []
    for person in sorted(p for p in folder.iterdir() if p.is_dir()):
        for f in image_files(person):
            faces = analyzer.analyze(f.read_bytes())
            if faces:
                crops.append(faces[0].crop)
                labels.append(person.name)
    return np.stack(crops), labels


@pytest.fixture(scope="module")
def celebrity_crops(analyzer: FaceAnalyzer, celebrity_root: Path) -> dict[str, Split]:
    """Aligned crops of the train and val photos (MTCNN, largest face, the default alignment)."""
    return {"train": _crops(analyzer, celebrity_root / "train"), "val": _crops(analyzer, celebrity_root / "val")}


@pytest.fixture(scope="module")
def fp32_embeddings(weights_path: Path, celebrity_crops: dict[str, Split]) -> dict[str, npt.NDArray[np.float32]]:
    """The reference: fp32 (TensorFlow) embeddings with flip TTA of the train and val crops."""
    encoder = FaceNetEncoder(weights_path, flip_tta=True)
    return {split: encoder.encode(crops) for split, (crops, _) in celebrity_crops.items()}


@pytest.fixture(scope="module", params=FAST)
def fast_encoder(
    request: pytest.FixtureRequest, weights_path: Path, celebrity_crops: dict[str, Split]
) -> BatchedEncoder:
    """A fast-path encoder; int8 is calibrated on the train crops (what the default calibration uses too)."""
    ensure_ir(weights_path, request.param, calibration=celebrity_crops["train"][0])
    return create_encoder(weights_path, request.param, flip_tta=True)


@pytest.fixture(scope="module")
def fast_embeddings(
    fast_encoder: BatchedEncoder, celebrity_crops: dict[str, Split]
) -> dict[str, npt.NDArray[np.float32]]:
    return {split: fast_encoder.encode(crops) for split, (crops, _) in celebrity_crops.items()}


def test_fast_path_embeddings_match_fp32_per_face(
    fast_encoder: BatchedEncoder,
    fast_embeddings: dict[str, npt.NDArray[np.float32]],
    fp32_embeddings: dict[str, npt.NDArray[np.float32]],
) -> None:
    fast = np.concatenate([fast_embeddings["train"], fast_embeddings["val"]])
    ref = np.concatenate([fp32_embeddings["train"], fp32_embeddings["val"]])
    assert fast.dtype == np.float32 and fast.shape == (len(ref), 128) and len(ref) >= 115
    np.testing.assert_allclose(np.linalg.norm(fast, axis=1), 1.0, atol=1e-5)
    cosine = (fast * ref).sum(axis=1)
    assert cosine.min() >= COSINE_FLOOR[fast_encoder.precision], f"{fast_encoder.precision}: {cosine.min():.4f}"
    assert cosine.mean() >= 0.995


def test_fast_path_names_every_validation_photo(
    fast_encoder: BatchedEncoder,
    fast_embeddings: dict[str, npt.NDArray[np.float32]],
    fp32_embeddings: dict[str, npt.NDArray[np.float32]],
    celebrity_crops: dict[str, Split],
) -> None:
    train_labels, val_labels = celebrity_crops["train"][1], celebrity_crops["val"][1]
    assert len(val_labels) == 25
    for gallery in (fast_embeddings["train"], fp32_embeddings["train"]):  # fast probes vs a fast and an fp32 gallery
        nearest = pairwise_distances(fast_embeddings["val"], gallery).argmin(axis=1)
        wrong = [(v, train_labels[i]) for v, i in zip(val_labels, nearest, strict=True) if v != train_labels[i]]
        assert wrong == [], f"{fast_encoder.precision} 1-NN mistakes: {wrong}"


def test_fast_path_flip_and_batching_are_consistent(
    fast_encoder: BatchedEncoder, celebrity_crops: dict[str, Split]
) -> None:
    crops = celebrity_crops["val"][0][:5]
    together = fast_encoder.encode(crops)
    alone = np.stack([fast_encoder.encode(c[None])[0] for c in crops])
    assert np.abs(together - alone).max() < 2e-3
    plain = fast_encoder.encode(crops, flip_tta=False)
    mirrored = fast_encoder.encode(np.ascontiguousarray(crops[:, :, ::-1, :]), flip_tta=False)
    manual = plain + mirrored
    manual /= np.linalg.norm(manual, axis=1, keepdims=True)
    assert np.abs(manual - together).max() < 2e-3
    assert fast_encoder.encode(np.zeros((0, 160, 160, 3), np.uint8)).shape == (0, 128)
    with pytest.raises(ValueError):
        fast_encoder.encode(np.zeros((1, 100, 100, 3), np.uint8))


def test_fast_path_is_safe_from_several_threads(
    fast_encoder: BatchedEncoder, celebrity_crops: dict[str, Split]
) -> None:
    crops = celebrity_crops["val"][0][:4]
    expected = fast_encoder.encode(crops)
    results: list[npt.NDArray[np.float32]] = []

    def work() -> None:
        for _ in range(3):
            results.append(fast_encoder.encode(crops))

    threads = [threading.Thread(target=work) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 18
    for r in results:
        assert np.abs(r - expected).max() < 1e-5
    # memory stays bounded: six threads share at most ``max_requests`` infer requests (each holds its buffers)
    assert isinstance(fast_encoder, OpenVinoEncoder)
    assert 1 <= fast_encoder._created <= fast_encoder.max_requests == 2


def test_converted_model_is_cached_per_weights_digest_and_precision(
    fast_encoder: BatchedEncoder, weights_path: Path
) -> None:
    assert isinstance(fast_encoder, OpenVinoEncoder)
    target = ir_dir(weights_path, fast_encoder.precision)
    assert (target / META_FILE).is_file() and (target / "model.xml").is_file() and (target / "model.bin").is_file()
    assert not [p for p in target.parent.iterdir() if p.name.startswith(".")], "temporary conversion dirs left"
    # A second encoder reuses the cached model (no conversion: the files are not rewritten).
    before = (target / "model.bin").stat().st_mtime_ns
    create_encoder(weights_path, fast_encoder.precision)
    assert (target / "model.bin").stat().st_mtime_ns == before
    # Another weights file (e.g. a fine-tuned model) gets its own directory; bf16 shares the fp32 conversion.
    assert ir_dir(weights_path, "int8", sha256="0" * 64) != ir_dir(weights_path, "int8")
    assert ir_dir(weights_path, "bf16") == ir_dir(weights_path, "bf16", sha256=target.parent.name)
    assert "0" * 64 in str(ir_dir(weights_path, "bf16", sha256="0" * 64))


def test_unknown_precision_is_refused(weights_path: Path) -> None:
    assert PRECISIONS == ("fp32", "bf16", "int8")
    with pytest.raises(ValueError, match="fp16"):
        create_encoder(weights_path, "fp16")
    with pytest.raises(ValueError, match="fp16"):
        AnalyzerConfig(encoder="fp16")


def test_service_setting_selects_the_encoder(monkeypatch: pytest.MonkeyPatch) -> None:
    from pydantic import ValidationError

    from service.config import Settings

    monkeypatch.setenv("FACEREC_ENCODER", "int8")
    assert Settings().analyzer_config().encoder == "int8"
    monkeypatch.setenv("FACEREC_ENCODER", "fp16")
    with pytest.raises(ValidationError):
        Settings()
