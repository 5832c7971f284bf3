"""MTCNN on OpenVINO: the ``mtcnn`` package's three networks built as OpenVINO graphs from its weight arrays.

Conversion needs no TensorFlow: PNet, RNet and ONet are written layer by layer with OpenVINO's opset API
(convolution, PReLU, max-pooling with the TF ``same``/``valid`` padding rules, the package's ``Permute((2, 1, 3))``
before flattening, dense layers, softmax) and filled with the arrays of the package's ``pnet.lz4``, ``rnet.lz4`` and
``onet.lz4`` (joblib pickles of Keras ``get_weights()`` lists, read with joblib; the package is never imported).
The three source files are checked against :data:`SOURCE_SHA256` (mtcnn 1.0.0), and the converted models are saved
once as OpenVINO IR under ``<cache>/detectors/<sha256 of the three digests>/mtcnn-v<N>/`` with an atomic directory
rename; ``meta.json`` records each IR file's sha256, checked when the models load. The server therefore needs only
OpenVINO and numpy; ``facerec weights fetch`` (or the first detector made where the ``mtcnn`` package is installed)
writes the IR.

Inputs are NHWC float32 normalised images, ``(x - 127.5) / 128``; PNet has a dynamic batch and spatial shape,
RNet (24x24) and ONet (48x48) a dynamic batch. Outputs are the Keras models' (NHWC for PNet). Inference runs in
f32 by default (``INFERENCE_PRECISION_HINT``), so that the thresholded decisions are the package's; bf16 is an
option (:data:`PRECISIONS`) that changes a few of them.

:class:`OpenVinoNetworks` implements :class:`embeddings.mtcnn_algorithm.Networks`: the pyramid's ``AREA``
resizing is OpenCV's ``INTER_AREA`` on the float image (the same box filter as TF's ``ResizeArea``), and the
RNet/ONet crops are :func:`embeddings.mtcnn_algorithm.crop_and_resize`. Every network call goes through a
:class:`embeddings.call_batcher.CallBatcher`, so concurrent detections share calls.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from embeddings import weights as weights_mod
from embeddings.call_batcher import CallBatcher
from embeddings.errors import WeightsUnavailable
from embeddings.mtcnn_algorithm import ONET_SIDE, RNET_SIDE, crop_and_resize
from embeddings.ov_cache import compile_cache

Log = Callable[[str], None]
Arrays = list[npt.NDArray[np.float32]]

NETWORKS = ("pnet", "rnet", "onet")
SOURCE_SHA256 = {
    "pnet": "ea6b0c3e685ebee3165326ad6484acc95f2ef78f1c94fbf40a55704fa989f7b5",
    "rnet": "cb00e6460f3c98b0bfafaba3c0a0ded4bdf6e62cee7174d969e8670d7e757fee",
    "onet": "94f6ea2f4cf985275ee958cdd762d17b6009348a4fb9d8c6be39ba73ffd22ca3",
}
"""sha256 of ``mtcnn/assets/weights/<net>.lz4`` in the ``mtcnn`` 1.0.0 wheel."""
CONVERSION_VERSION = 1
"""Bumped when the graphs change, so that older cached models are rebuilt."""

RUNTIME_CACHE_SHAPES = 64
"""Input shapes whose prepared kernels OpenVINO's CPU plugin keeps per network (least recently used go first).
PNet sees a new shape for every image size and pyramid level, RNet/ONet one per batch size; the plugin's
default keeps 5,000, about 0.6 MiB each, so a server shown many image sizes (or a stream's face regions) grew
by hundreds of MiB. 64 holds the pyramids of the few sizes a camera or a client sends."""
META_FILE = "meta.json"
PRECISIONS = {"f32": ("f32", "f32", "f32"), "bf16": ("bf16", "bf16", "bf16"), "mixed": ("f32", "bf16", "bf16")}
"""OpenVINO ``INFERENCE_PRECISION_HINT`` of PNet, RNet and ONet for each :class:`OpenVinoNetworks` precision
(bf16 is used only where the CPU has it; elsewhere OpenVINO runs f32)."""
DEFAULT_PRECISION = "f32"
"""f32: the thresholded decisions are the package's (see docs/BENCHMARKS.md for bf16's agreement)."""


def _silent(_: str) -> None:
    pass


def weights_digest() -> str:
    """The cache key of the package's weights: sha256 of the three files' digests, in PNet, RNet, ONet order."""
    return hashlib.sha256("".join(SOURCE_SHA256[n] for n in NETWORKS).encode()).hexdigest()


def ir_dir(root: Path | None = None) -> Path:
    """Where the converted networks live."""
    return (root or weights_mod.cache_dir()) / "detectors" / weights_digest() / f"mtcnn-v{CONVERSION_VERSION}"


def source_dir() -> Path | None:
    """The installed ``mtcnn`` package's weights folder, found without importing the package (which would import
    TensorFlow); None when it is not installed."""
    spec = importlib.util.find_spec("mtcnn")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "assets" / "weights"
    return folder if folder.is_dir() else None


def load_source_arrays(folder: Path | None = None) -> dict[str, Arrays]:
    """Each network's Keras weight list from the package's files, after checking their sha256."""
    folder = folder or source_dir()
    if folder is None:
        raise WeightsUnavailable(
            "the MTCNN networks are not converted and the `mtcnn` package (to convert them from) is not installed: "
            "run `facerec weights fetch` where the `convert` extra is installed (pip install 'facerec[convert]')"
        )
    import joblib

    out: dict[str, Arrays] = {}
    for net in NETWORKS:
        path = folder / f"{net}.lz4"
        digest = weights_mod.sha256_file(path) if path.is_file() else "missing"
        if digest != SOURCE_SHA256[net]:
            raise WeightsUnavailable(f"{path} has sha256 {digest}, expected {SOURCE_SHA256[net]} (mtcnn 1.0.0)")
        out[net] = [np.asarray(a, dtype=np.float32) for a in joblib.load(path)]
    return out


# -- graphs -------------------------------------------------------------------------------------------------


def _ops() -> Any:
    import openvino.opset8 as ops

    return ops


def _const(array: npt.NDArray[Any]) -> Any:
    return _ops().constant(np.ascontiguousarray(array, dtype=np.float32))


def _conv(x: Any, kernel: npt.NDArray[np.float32], bias: npt.NDArray[np.float32]) -> Any:
    """Keras ``Conv2D`` (stride 1, ``valid``) on NCHW: kernel (kh, kw, in, out) -> OIHW."""
    ops = _ops()
    y = ops.convolution(x, _const(kernel.transpose(3, 2, 0, 1)), [1, 1], [0, 0], [0, 0], [1, 1])
    return ops.add(y, _const(bias.reshape(1, -1, 1, 1)))


def _prelu(x: Any, alpha: npt.NDArray[np.float32]) -> Any:
    """Keras ``PReLU`` with one slope per channel (axis 1 here)."""
    return _ops().prelu(x, _const(alpha.reshape(-1)))


def _pool(x: Any, size: int, stride: int, padding: str) -> Any:
    """Keras ``MaxPooling2D``: ``same`` pads at the end as TF does (``same_upper``), padding never wins."""
    auto_pad = "same_upper" if padding == "same" else "valid"
    pool = _ops().max_pool(x, [stride, stride], [1, 1], [0, 0], [0, 0], [size, size], "floor", auto_pad)
    return pool.output(0)


def _dense(x: Any, kernel: npt.NDArray[np.float32], bias: npt.NDArray[np.float32]) -> Any:
    ops = _ops()
    return ops.add(ops.matmul(x, _const(kernel), False, False), _const(bias.reshape(1, -1)))


def _nchw(x: Any) -> Any:
    return _ops().transpose(x, _ops().constant(np.asarray([0, 3, 1, 2], dtype=np.int64)))


def _flatten_permuted(x: Any) -> Any:
    """The package's ``Permute((2, 1, 3))`` + ``Flatten`` of an NHWC tensor, from NCHW: (N, W, H, C) flattened."""
    ops = _ops()
    wh_c = ops.transpose(x, ops.constant(np.asarray([0, 3, 2, 1], dtype=np.int64)))
    return ops.reshape(wh_c, ops.constant(np.asarray([0, -1], dtype=np.int64)), True)


def build_pnet(w: Arrays) -> Any:
    import openvino as ov

    ops = _ops()
    image = ops.parameter([-1, -1, -1, 3], np.float32, name="image")
    x = _nchw(image)
    x = _pool(_prelu(_conv(x, w[0], w[1]), w[2]), 2, 2, "same")
    x = _prelu(_conv(x, w[3], w[4]), w[5])
    x = _prelu(_conv(x, w[6], w[7]), w[8])
    reg = _conv(x, w[9], w[10])
    prob = ops.softmax(_conv(x, w[11], w[12]), 1)
    nhwc = ops.constant(np.asarray([0, 2, 3, 1], dtype=np.int64))
    outputs = [ops.transpose(reg, nhwc), ops.transpose(prob, nhwc)]
    return ov.Model([o.output(0) for o in outputs], [image], "mtcnn_pnet")


def _build_refine_net(w: Arrays, side: int, pools: Sequence[tuple[int, int, str]], heads: int, name: str) -> Any:
    """RNet / ONet: ``side``-px input, a PReLU convolution per max-pool in ``pools`` ``(size, stride, padding)``,
    one more PReLU convolution, a PReLU dense layer and ``heads`` dense outputs (the last one softmaxed), with the
    weights of ``w`` in the Keras order."""
    import openvino as ov

    ops = _ops()
    image = ops.parameter([-1, side, side, 3], np.float32, name="image")
    x = _nchw(image)
    for k, (size, stride, padding) in enumerate(pools):
        x = _pool(_prelu(_conv(x, w[3 * k], w[3 * k + 1]), w[3 * k + 2]), size, stride, padding)
    k = 3 * len(pools)
    x = _prelu(_conv(x, w[k], w[k + 1]), w[k + 2])
    x = _prelu(_dense(_flatten_permuted(x), w[k + 3], w[k + 4]), w[k + 5])
    outputs = [_dense(x, w[k + 6 + 2 * h], w[k + 7 + 2 * h]) for h in range(heads)]
    outputs[-1] = ops.softmax(outputs[-1], 1)
    return ov.Model([o.output(0) for o in outputs], [image], name)


def build_rnet(w: Arrays) -> Any:
    return _build_refine_net(w, RNET_SIDE, [(3, 2, "same"), (3, 2, "valid")], 2, "mtcnn_rnet")


def build_onet(w: Arrays) -> Any:
    return _build_refine_net(w, ONET_SIDE, [(3, 2, "same"), (3, 2, "valid"), (2, 2, "same")], 3, "mtcnn_onet")


BUILDERS = {"pnet": build_pnet, "rnet": build_rnet, "onet": build_onet}


def ir_ready(target: Path) -> bool:
    """True when ``target`` holds the three IR pairs with the sha256 its meta.json recorded."""
    try:
        files = json.loads((target / META_FILE).read_text())["files"]  # ov-cache/ (compiled blobs) is not listed
        return all(weights_mod.sha256_file(target / name) == digest for name, digest in files.items()) and len(
            files
        ) == 2 * len(NETWORKS)
    except (OSError, ValueError, KeyError, TypeError):
        return False


def ensure_ir(root: Path | None = None, *, source: Path | None = None, log: Log = _silent) -> Path:
    """Convert the package's networks (once) and return the folder holding ``pnet.xml``, ``rnet.xml``, ``onet.xml``.

    A cached folder whose files fail their sha256 is rebuilt. Raises :class:`WeightsUnavailable` when the models
    are not cached and cannot be converted here (no ``mtcnn`` package, or its files are not mtcnn 1.0.0's).
    """
    import openvino as ov

    target = ir_dir(root)
    if ir_ready(target):
        return target
    arrays = load_source_arrays(source)
    log(f"converting the MTCNN networks to OpenVINO into {target}")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    tmp.chmod(0o755)  # mkdtemp makes it 0700; a cache built by root (an image build) must stay readable
    try:
        files = {}
        for net in NETWORKS:
            ov.save_model(BUILDERS[net](arrays[net]), tmp / f"{net}.xml", compress_to_fp16=False)
            for suffix in (".xml", ".bin"):
                files[net + suffix] = weights_mod.sha256_file(tmp / f"{net}{suffix}")
        meta = {"source_sha256": SOURCE_SHA256, "openvino": ov.__version__, "files": files}
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2))
        if target.exists() and not ir_ready(target):
            shutil.rmtree(target, ignore_errors=True)
        try:
            os.replace(tmp, target)
        except OSError:
            if not ir_ready(target):  # lost a race to a finished writer: theirs is as good
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


# -- runtime ------------------------------------------------------------------------------------------------


class OpenVinoNetworks:
    """The three networks compiled for the CPU at ``precision`` (:data:`PRECISIONS`), behind one
    :class:`CallBatcher` (see the module doc).

    Thread-safe: any number of threads may run cascades at once; their network calls are serialised, and calls
    waiting at the same time for the same network and input shape are run as one batch.
    """

    def __init__(
        self,
        root: Path | None = None,
        *,
        log: Log = _silent,
        max_batch: int = 1024,
        max_queue: int = 256,
        precision: str = DEFAULT_PRECISION,
    ) -> None:
        import openvino as ov

        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
        self.precision = precision
        folder = ensure_ir(root, log=log)
        core = ov.Core()
        compile_cache(core, folder)
        # THROUGHPUT: one CPU stream per core, and each call is split into pieces run concurrently (PNet: one
        # pyramid level each, largest first; RNet/ONet: the batch cut in one chunk per stream). The levels and
        # batches are small: on 2 cores this measured ~1.4-2x faster than running each piece on every core in
        # turn (bench/detect.py; docs/BENCHMARKS.md).
        self._queues: dict[str, Any] = {}
        for net, net_precision in zip(NETWORKS, PRECISIONS[precision], strict=True):
            config = {
                "PERFORMANCE_HINT": "THROUGHPUT",
                "INFERENCE_PRECISION_HINT": net_precision,
                "CPU_RUNTIME_CACHE_CAPACITY": RUNTIME_CACHE_SHAPES,
            }
            compiled = core.compile_model(core.read_model(folder / f"{net}.xml"), "CPU", config)
            queue = ov.AsyncInferQueue(compiled, max(int(compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS")), 1))
            queue.set_callback(self._collect)
            self._queues[net] = queue
        self._pieces: dict[int, list[npt.NDArray[np.float32]]] = {}
        self.batcher = CallBatcher(self._infer, max_batch=max_batch, max_queue=max_queue)

    def _collect(self, request: Any, index: int) -> None:
        """An infer request's callback (OpenVINO's thread): keep a copy of its outputs under its piece index."""
        self._pieces[index] = [np.array(t.data, copy=True) for t in request.output_tensors]

    def _infer(self, net: str, parts: list[npt.NDArray[np.float32]]) -> list[list[npt.NDArray[np.float32]]]:
        """The outputs of network ``net`` for each part (only ever called from one thread at a time: the batcher
        serialises calls). Every part is cut into pieces (PNet: a level is one piece; RNet/ONet: one chunk per
        infer request) that run concurrently."""
        queue = self._queues[net]
        streams = len(queue) if net != "pnet" else 1
        pieces: list[int] = []  # the part of each piece
        self._pieces.clear()
        for k, batch in enumerate(parts):
            for chunk in np.array_split(batch, max(1, min(streams, len(batch)))):
                queue.start_async({0: chunk}, len(pieces))
                pieces.append(k)
        queue.wait_all()
        outputs: list[list[list[npt.NDArray[np.float32]]]] = [[] for _ in parts]
        for index, k in enumerate(pieces):
            outputs[k].append(self._pieces.pop(index))
        return [[np.concatenate(same) for same in zip(*chunks, strict=True)] for chunks in outputs]

    def close(self) -> None:
        self.batcher.close()

    # -- the Networks protocol ------------------------------------------------------------------------------

    def prepare(self, image: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
        return (image.astype(np.float32) - np.float32(127.5)) / np.float32(128.0)

    def prepare_source(self, source: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
        return source

    def pnet(
        self, prepared: npt.NDArray[np.float32], sizes: Sequence[tuple[int, int]]
    ) -> list[tuple[npt.NDArray[Any], npt.NDArray[Any]]]:
        levels = []
        for height, width in sizes:
            level: npt.NDArray[Any] = prepared
            if (height, width) != prepared.shape[:2]:
                level = cv2.resize(prepared, (width, height), interpolation=cv2.INTER_AREA)
            levels.append(level[None])
        outputs = self.batcher.call_parts("pnet", levels)
        return [(reg, prob[..., 1]) for reg, prob in ((r[0], p[0]) for r, p in outputs)]

    def rnet(self, prepared: npt.NDArray[np.float32], coords: npt.NDArray[np.float32]) -> tuple[Any, Any]:
        offsets, scores = self.batcher.call("rnet", crop_and_resize(prepared, coords, RNET_SIDE))
        return offsets, scores

    def onet(self, prepared: npt.NDArray[np.float32], coords: npt.NDArray[np.float32]) -> tuple[Any, Any, Any]:
        offsets, marks, scores = self.batcher.call("onet", crop_and_resize(prepared, coords, ONET_SIDE))
        return offsets, marks, scores

    def onet_source(self, source: npt.NDArray[np.uint8], coords: npt.NDArray[np.float32]) -> tuple[Any, Any, Any]:
        patches = crop_and_resize(source, coords, ONET_SIDE, extrapolation=127.5)
        patches = (patches - np.float32(127.5)) / np.float32(128.0)
        offsets, marks, scores = self.batcher.call("onet", patches)
        return offsets, marks, scores
