"""The fast FaceNet encoder paths: the same Keras model converted to OpenVINO, run in bf16 or int8 on the CPU.

* ``bf16``: the fp32 OpenVINO model compiled with the ``bf16`` inference-precision hint (oneDNN AVX512-BF16 /
  AMX kernels); weights and activations are rounded to bfloat16 inside the network, accumulations stay fp32.
* ``int8``: the model statically quantised by NNCF (per-channel int8 weights, per-tensor int8 activations,
  VNNI kernels), calibrated on aligned faces of the 5-celebrity set's ``train`` split (each face and its mirror
  image), with the layers NNCF leaves in float run in bf16.

On a CPU without native bf16 the hint is not set and the float parts run in fp32 (slower, same interface).

Conversion runs once per (weights file, precision): the model is built from the Keras weights file, converted
with ``openvino.convert_model`` (and quantised for int8), and saved under
``<cache>/encoders/<sha256 of the weights file>/<precision>/`` with an atomic directory rename, so any Keras weights
file of this architecture (a fine-tuned model too) gets its own converted copy and two processes converting at
once cannot leave a half-written model.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from embeddings import weights as weights_mod
from embeddings.align import CROP_SIZE, DEFAULT_MARGIN, align_face, prewhiten
from embeddings.facenet import BatchedEncoder, FaceNetEncoder
from embeddings.ov_cache import compile_cache

Log = Callable[[str], None]

FAST_PRECISIONS = ("bf16", "int8")
"""The precisions this module serves; ``fp32`` is :class:`embeddings.facenet.FaceNetEncoder`."""

MODEL_FILE = "model.xml"
META_FILE = "meta.json"
CONVERSION_VERSION = 1
"""Bumped when the conversion recipe changes, so that older cached models are rebuilt."""


def _silent(_: str) -> None:
    pass


def ir_dir(weights_path: Path, precision: str, root: Path | None = None, sha256: str | None = None) -> Path:
    """Where the converted model of ``weights_path`` at ``precision`` lives (bf16 uses the fp32 IR)."""
    digest = sha256 or weights_mod.sha256_file(Path(weights_path))
    stored = "fp32" if precision == "bf16" else precision
    return (root or weights_mod.cache_dir()) / "encoders" / digest / f"{stored}-v{CONVERSION_VERSION}"


def calibration_crops(dataset_root: Path | None = None, log: Log = _silent) -> npt.NDArray[np.uint8]:
    """Aligned 160x160 crops of the 5-celebrity ``train`` photos, detected and aligned as the service does
    (MTCNN, largest face, the default margin, eye-levelling rotation); photos without a face are skipped."""
    from embeddings.detector import FaceDetector
    from embeddings.images import decode_image

    root = dataset_root or weights_mod.sample_dataset_path()
    if not (root / "train").is_dir():
        root = weights_mod.fetch_sample_dataset(log=log)
    detector = FaceDetector()
    crops = []
    for path in sorted((root / "train").glob("*/*")):
        if path.suffix.lower() not in {".jpg", ".jpeg", ".png"}:
            continue
        image = decode_image(path.read_bytes())
        detections = detector.detect(image)
        if detections:
            crops.append(align_face(image, detections[0], margin=DEFAULT_MARGIN, rotate=True, size=CROP_SIZE))
    if not crops:
        raise RuntimeError(f"no faces found for calibration under {root / 'train'}")
    return np.stack(crops)


def _convert_fp32(weights_path: Path) -> Any:
    """The Keras model of ``weights_path`` as an OpenVINO model with a dynamic batch dimension."""
    import openvino as ov

    tf_encoder = FaceNetEncoder(weights_path)
    model = ov.convert_model(tf_encoder._forward.get_concrete_function())
    model.reshape([-1, CROP_SIZE, CROP_SIZE, 3])
    return model


def _quantize_int8(model: Any, crops: npt.NDArray[np.uint8]) -> Any:
    """NNCF post-training static quantisation, calibrated on ``crops`` and their mirror images."""
    import nncf

    whitened = prewhiten(crops)
    samples = np.concatenate([whitened, whitened[:, :, ::-1, :]], axis=0)
    dataset = nncf.Dataset([samples[i : i + 1] for i in range(len(samples))])
    return nncf.quantize(
        model,
        dataset,
        subset_size=len(samples),
        preset=nncf.QuantizationPreset.PERFORMANCE,
    )


def ensure_ir(
    weights_path: Path,
    precision: str,
    *,
    root: Path | None = None,
    calibration: npt.NDArray[np.uint8] | None = None,
    log: Log = _silent,
) -> Path:
    """Convert (once) and return the path of the OpenVINO model file for ``weights_path`` at ``precision``.

    ``calibration`` (aligned uint8 crops) overrides the default int8 calibration set (:func:`calibration_crops`).
    """
    if precision not in FAST_PRECISIONS:
        raise ValueError(f"precision must be one of {FAST_PRECISIONS}, got {precision!r}")
    import openvino as ov

    weights_path = Path(weights_path)
    digest = weights_mod.sha256_file(weights_path)
    target = ir_dir(weights_path, precision, root, sha256=digest)
    if (target / META_FILE).is_file():
        return target / MODEL_FILE
    log(f"converting {weights_path.name} to OpenVINO ({precision}) into {target}")
    model = _convert_fp32(weights_path)
    meta: dict[str, Any] = {"weights_sha256": digest, "precision": precision, "openvino": ov.__version__}
    if precision == "int8":
        crops = calibration_crops(log=log) if calibration is None else calibration
        model = _quantize_int8(model, crops)
        meta["calibration_faces"] = len(crops)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    tmp.chmod(0o755)  # mkdtemp makes it 0700; a cache built by root (an image build) must stay readable
    try:
        ov.save_model(model, tmp / MODEL_FILE, compress_to_fp16=False)
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2))
        try:
            os.replace(tmp, target)
        except OSError:
            if not (target / META_FILE).is_file():  # lost a race to a finished writer: theirs is as good
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target / MODEL_FILE


def cpu_has_bf16() -> bool:
    """True when OpenVINO's CPU plugin can run bf16 natively (AVX512-BF16 or AMX)."""
    import openvino as ov

    return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


class OpenVinoEncoder(BatchedEncoder):
    """FaceNet through OpenVINO on the CPU at ``precision`` ``bf16`` or ``int8`` (same interface as fp32).

    Thread-safe: a call borrows an infer request from a pool of at most ``max_requests`` on the one compiled
    model (more concurrent callers wait for one). Each infer request holds its own intermediate buffers (tens of
    MB at batch 64), so one per calling thread made the service's memory grow with every new worker thread that
    happened to encode; the pool bounds it.
    """

    def __init__(
        self,
        weights_path: Path,
        *,
        precision: str,
        batch_size: int = 32,
        flip_tta: bool = False,
        cache_root: Path | None = None,
        log: Log = _silent,
        max_requests: int = 2,
    ) -> None:
        import openvino as ov

        super().__init__(weights_path, batch_size=batch_size, flip_tta=flip_tta)
        self.precision = precision
        model_file = ensure_ir(self.weights_path, precision, root=cache_root, log=log)
        config: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY"}
        if cpu_has_bf16():
            config["INFERENCE_PRECISION_HINT"] = "bf16"
        core = ov.Core()
        compile_cache(core, model_file.parent)
        self.compiled = core.compile_model(core.read_model(model_file), "CPU", config)
        self.inference_precision = self.compiled.get_property("INFERENCE_PRECISION_HINT").to_string()
        """What OpenVINO actually runs the float layers in (``bf16`` or ``f32``)."""
        self.max_requests = max(int(max_requests), 1)
        self._idle: list[Any] = []
        self._created = 0
        self._pool = threading.Condition()

    def _borrow(self) -> Any:
        with self._pool:
            while not self._idle and self._created >= self.max_requests:
                self._pool.wait()
            if self._idle:
                return self._idle.pop()
            self._created += 1
        try:
            return self.compiled.create_infer_request()
        except BaseException:
            with self._pool:
                self._created -= 1
                self._pool.notify()
            raise

    def _give_back(self, request: Any) -> None:
        with self._pool:
            self._idle.append(request)
            self._pool.notify()

    def forward(self, batch: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        request = self._borrow()
        try:
            result = request.infer({0: batch})
            return np.array(result[0], dtype=np.float32, copy=True)
        finally:
            self._give_back(request)
