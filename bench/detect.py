"""Face detection: the OpenVINO and compiled (TensorFlow) MTCNN backends vs the ``mtcnn`` package, latency and
agreement, in one run.

Test photos (all from real images; ``--background`` defaults to scikit-learn's bundled ``china.jpg``, a
640x427 photo of a temple with no face, when scikit-learn is installed):

* ``1080p`` (a hard case: its busy background gives PNet thousands of candidates): the background resized to
  1920x1080, one 5-celebrity photo (``val/ben_afflek``, first file) resized to 600 px high pasted at (660, 240);
  the face is about 250 px;
* ``1080p_portrait``: the same photo upscaled to 1080 px high, centred, its edge columns repeated out to
  1920 px wide (face about 450 px, plain background);
* ``640x480``: the background resized to 640x480, the same photo resized to 300 px high pasted at (170, 90);
* ``lfw``: one LFW 250x250 image (``--lfw-root``, the first image of ``Aaron_Eckhart``), as is.

Latency (per image, p50/p95 ms over ``--repeats`` calls after 3 warm-up calls, the detectors' calls interleaved
one of each in turn, so that load changes on a shared machine weigh on all alike): the naive baseline is the
package's ``MTCNN.detect_faces`` on the full image; it is compared with ``FaceDetector(backend=B)`` for each of
``--backends`` (``openvino``, the server's, and ``compiled``) at each ``--max-sides`` value (named ``<B>_max<N>``)
and with ``FaceDetector(backend="package")`` (package on the downscaled copy).

Agreement: on ``--n-lfw`` LFW images (random, ``--seed``) and on ``--canvases`` multi-face canvases (4-6 LFW
faces cut out with a margin, pasted at 40-320 px on the background resized to 1280x960), each compiled
detection is matched to a package detection (``detect_faces`` on the same full image, greedy by IoU >= 0.5):
mean IoU, share >= 0.9, misses (package faces with no match), extras (compiled faces with no match) and the
landmark error over the box side. ``lfw_<B>`` and ``canvas_<B>`` compare each backend's algorithm on the same
image (``Cascade.detect`` vs ``detect_faces``, min face 20 px); ``canvas_detector_<B>_max<N>`` compares the product
path (``FaceDetector(max_side=N)``: downscaling, full-resolution ONet refinement, filters) against the package on
the full image, and ``canvas_detector_max<N>_unrefined`` the same without the refinement (``refine=False``,
for ``--unrefined-sides``). ``share_iou_ge_0.9_of_findable`` counts only reference faces at least
``FaceDetector.smallest_face`` source px on their shorter side (what the detector is configured to find), and
``refinement_set_changes`` counts faces that one of the refined / unrefined detectors has and the other has not
(refinement moves boxes and landmarks only). ``canvas_package_shift<k>`` is the package against itself on the
canvas shifted by ``k`` px (its first ``k`` rows and columns cut off, boxes mapped back): how far the package's
own boxes move when the pixels move, a floor for any detector that does not run on the same pixels.

Usage:

    .venv/bin/python bench/detect.py --lfw-root <lfw-deepfunneled> \\
        --skip-agreement --out reports/detect-latency.json
    nice -n 19 .venv/bin/python bench/detect.py --lfw-root <lfw-deepfunneled> --skip-latency \\
        --out reports/detect-agreement.json
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import numpy.typing as npt

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.detect_images import (
    Image,
    Rows,
    background,
    face_cutout,
    make_canvases,
    read_rgb,
    timing_photos,
)


def package_rows(mtcnn: Any, image: Image, min_face_size: int = 20) -> Rows:
    raw = mtcnn.detect_faces(image, min_face_size=min_face_size)
    rows = []
    for r in raw:
        x, y, w, h = (float(v) for v in r["box"])
        kp = r["keypoints"]
        names = ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")
        rows.append(
            [x, y, x + w, y + h, float(r["confidence"])]
            + [float(kp[n][0]) for n in names]
            + [float(kp[n][1]) for n in names]
        )
    return np.asarray(rows, dtype=np.float64).reshape(-1, 15)


def detector_rows(detector: Any, image: Image) -> Rows:
    rows = []
    for d in detector.detect(image):
        lm = d.landmarks
        pts = [lm.left_eye, lm.right_eye, lm.nose, lm.mouth_left, lm.mouth_right]
        b = d.box
        rows.append([b.x, b.y, b.x2, b.y2, d.confidence] + [p[0] for p in pts] + [p[1] for p in pts])
    return np.asarray(rows, dtype=np.float64).reshape(-1, 15)


def iou_matrix(a: Rows, b: Rows) -> npt.NDArray[np.float64]:
    ix = np.maximum(0, np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]))
    iy = np.maximum(0, np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]))
    inter = ix * iy
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-9), 0.0)


class Agreement:
    """Matches one detector's faces to the reference's, image by image, and sums up."""

    def __init__(self) -> None:
        self.images = 0
        self.reference_faces = 0
        self.ious: list[float] = []
        self.landmark_errors: list[float] = []
        self.misses = 0
        self.misses_below_smallest_face = 0
        self.extras = 0
        self.findable_faces = 0
        self.findable_ious: list[float] = []

    def add(self, reference: Rows, candidate: Rows, smallest_face: float = 0.0) -> None:
        """Match ``candidate`` to ``reference``; a missed reference face whose shorter side is under
        ``smallest_face`` (source px) is also counted apart (the candidate could not find it by design)."""
        self.images += 1
        self.reference_faces += len(reference)
        sides = np.minimum(reference[:, 2] - reference[:, 0], reference[:, 3] - reference[:, 1])
        self.findable_faces += int((sides >= smallest_face).sum())
        if len(reference) == 0 or len(candidate) == 0:
            self.misses += len(reference)
            self.misses_below_smallest_face += int((sides < smallest_face).sum())
            self.extras += len(candidate)
            return
        m = iou_matrix(reference, candidate)
        used_r: set[int] = set()
        used_c: set[int] = set()
        for flat in np.argsort(-m, axis=None):
            i, j = divmod(int(flat), m.shape[1])
            if m[i, j] < 0.5:
                break
            if i in used_r or j in used_c:
                continue
            used_r.add(i)
            used_c.add(j)
            self.ious.append(float(m[i, j]))
            if sides[i] >= smallest_face:
                self.findable_ious.append(float(m[i, j]))
            side = max(reference[i, 2] - reference[i, 0], reference[i, 3] - reference[i, 1], 1.0)
            err = np.hypot(reference[i, 5:10] - candidate[j, 5:10], reference[i, 10:15] - candidate[j, 10:15])
            self.landmark_errors.append(float(err.max() / side))
        self.misses += len(reference) - len(used_r)
        missed = np.setdiff1d(np.arange(len(reference)), np.fromiter(used_r, dtype=int, count=len(used_r)))
        self.misses_below_smallest_face += int((sides[missed] < smallest_face).sum())
        self.extras += len(candidate) - len(used_c)

    def summary(self) -> dict[str, Any]:
        ious = np.asarray(self.ious)
        lm = np.asarray(self.landmark_errors)
        return {
            "images": self.images,
            "reference_faces": self.reference_faces,
            "matched": len(self.ious),
            "mean_iou": round(float(ious.mean()), 4) if len(ious) else None,
            "min_iou": round(float(ious.min()), 4) if len(ious) else None,
            "share_iou_ge_0.9_of_reference": round(float((ious >= 0.9).sum() / max(self.reference_faces, 1)), 4),
            "findable_faces": self.findable_faces,
            "mean_iou_findable": round(float(np.mean(self.findable_ious)), 4) if self.findable_ious else None,
            "share_iou_ge_0.9_of_findable": round(
                float((np.asarray(self.findable_ious) >= 0.9).sum() / max(self.findable_faces, 1)), 4
            ),
            "misses": self.misses,
            "misses_below_smallest_face": self.misses_below_smallest_face,
            "extras": self.extras,
            "landmark_max_error_over_side_p99": round(float(np.percentile(lm, 99)), 4) if len(lm) else None,
        }


def latency(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, dict[str, float]]:
    """p50/p95 ms of each function over ``repeats`` calls after 3 warm-up calls, the calls interleaved (one of
    each in turn), so that a change of machine load during the run weighs on all of them alike."""
    for fn in fns.values():
        for _ in range(3):
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append((time.perf_counter() - start) * 1000.0)
    return {
        name: {"p50_ms": round(float(np.percentile(t, 50)), 1), "p95_ms": round(float(np.percentile(t, 95)), 1)}
        for name, t in times.items()
    }


def _precision(backend: str) -> str:
    """``openvino_<precision>`` -> the precision (``openvino``: the default)."""
    from embeddings.mtcnn_openvino import DEFAULT_PRECISION

    return backend.partition("_")[2] or DEFAULT_PRECISION


def _detector(backend: str, **kwargs: Any) -> Any:
    """``FaceDetector`` for a ``--backends`` name (``openvino_bf16`` is the openvino backend at bf16)."""
    from embeddings.detector import Backend, FaceDetector

    if backend.startswith("openvino"):
        return FaceDetector(backend="openvino", precision=_precision(backend), **kwargs)
    return FaceDetector(backend=cast(Backend, backend), **kwargs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lfw-root", type=Path, required=True, help="lfw-deepfunneled/<Name>/<Name>_NNNN.jpg")
    parser.add_argument("--background", type=Path, default=None, help="canvas photo (default: sklearn china.jpg)")
    parser.add_argument("--n-lfw", type=int, default=1000)
    parser.add_argument("--canvases", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--max-sides", default="1280,960,800", help="FaceDetector max_side values to time")
    parser.add_argument(
        "--unrefined-sides", default="640", help="max_side values also run with refine=False (timed and compared)"
    )
    parser.add_argument("--backends", default="openvino,compiled", help="FaceDetector backends to time and compare")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-agreement", action="store_true")
    parser.add_argument("--skip-latency", action="store_true", help="agreement only (untimed; run it niced)")
    parser.add_argument("--out", type=Path, default=None, help="write the figures as JSON here")
    args = parser.parse_args()

    from mtcnn import MTCNN

    from embeddings.detector import FaceDetector
    from embeddings.mtcnn_algorithm import Cascade

    rng = random.Random(args.seed)
    bg = background(args.background)
    photos = {**timing_photos(bg), "lfw_250": read_rgb(args.lfw_root / "Aaron_Eckhart" / "Aaron_Eckhart_0001.jpg")}

    package = MTCNN(device="CPU:0")
    backends = [b for b in args.backends.split(",") if b]
    engines: dict[str, Cascade] = {}
    for b in backends:
        if b.startswith("openvino"):
            from embeddings.mtcnn_openvino import OpenVinoNetworks

            engines[b] = Cascade(OpenVinoNetworks(precision=_precision(b)))
        else:
            from embeddings.mtcnn_compiled import CompiledMTCNN

            engines[b] = CompiledMTCNN()
    sides = [int(s) for s in args.max_sides.split(",") if s]
    detectors = {f"{b}_max{s}": _detector(b, max_side=s) for b in backends for s in sides}
    for b in backends:
        for s in (int(v) for v in args.unrefined_sides.split(",") if v):
            detectors[f"{b}_max{s}_unrefined"] = _detector(b, max_side=s, refine=False)
    detectors["package_max1280"] = FaceDetector(backend="package")

    report: dict[str, Any] = {"latency": {}, "faces_found": {}, "agreement": {}}
    for name, image in ({} if args.skip_latency else photos).items():
        row: dict[str, Any] = {"shape": list(image.shape[:2])}
        fns: dict[str, Callable[[], object]] = {"package_full_image": functools.partial(package.detect_faces, image)}
        fns.update({dname: functools.partial(det.detect, image) for dname, det in detectors.items()})
        row.update(latency(fns, args.repeats))
        base = row["package_full_image"]["p50_ms"]
        found = {"package_full_image": len(package.detect_faces(image))}
        for dname, det in detectors.items():
            row[dname]["speedup_p50"] = round(base / row[dname]["p50_ms"], 2)
            found[dname] = len(det.detect(image))
        report["latency"][name] = row
        report["faces_found"][name] = found
        print(name, json.dumps(row), flush=True)

    if not args.skip_agreement:
        people = sorted(p for p in args.lfw_root.iterdir() if p.is_dir())
        files = sorted(f for p in people for f in p.iterdir() if f.suffix == ".jpg")
        sample = rng.sample(files, min(args.n_lfw, len(files)))
        lfw = {b: Agreement() for b in engines}
        cutouts: list[Image] = []
        for path in sample:
            image = read_rgb(path)
            ref = package_rows(package, image)
            for b, engine in engines.items():
                lfw[b].add(ref, engine.detect(image))
            if len(cutouts) < 300:
                cut = face_cutout(image, ref)
                if cut is not None:
                    cutouts.append(cut)
        for b, agreement in lfw.items():
            report["agreement"][f"lfw_{b}"] = agreement.summary()
            print(f"lfw_{b}", json.dumps(report["agreement"][f"lfw_{b}"]), flush=True)

        canvas = {b: Agreement() for b in engines}
        shifted = {k: Agreement() for k in (1, 2)}
        products = {
            f"canvas_detector_{name}": (d, Agreement()) for name, d in detectors.items() if d.backend != "package"
        }
        pairs = [(a, b) for a in products for b in products if b == f"{a}_unrefined"]
        set_changes = {a: Agreement() for a, _ in pairs}
        for image in make_canvases(bg, cutouts, args.canvases, rng):
            ref = package_rows(package, image)
            for b, engine in engines.items():
                canvas[b].add(ref, engine.detect(image))
            for k, agreement in shifted.items():
                moved = package_rows(package, np.ascontiguousarray(image[k:, k:]))
                moved[:, [0, 1, 2, 3]] += k
                moved[:, 5:15] += k
                agreement.add(ref, moved)
            faces_of: dict[str, Rows] = {}
            for name, (det, agreement) in products.items():
                keep = ref[ref[:, 4] >= det.min_confidence]
                faces_of[name] = detector_rows(det, image)
                agreement.add(keep, faces_of[name], det.smallest_face(image.shape))
            for a, b in pairs:
                set_changes[a].add(faces_of[b], faces_of[a])
        for b, agreement in canvas.items():
            report["agreement"][f"canvas_{b}"] = agreement.summary()
            print(f"canvas_{b}", json.dumps(report["agreement"][f"canvas_{b}"]), flush=True)
        for k, agreement in shifted.items():
            report["agreement"][f"canvas_package_shift{k}"] = agreement.summary()
            print(f"canvas_package_shift{k}", json.dumps(report["agreement"][f"canvas_package_shift{k}"]), flush=True)
        for name, (_, agreement) in products.items():
            report["agreement"][name] = agreement.summary()
            print(name, json.dumps(report["agreement"][name]), flush=True)
        for a, changes in set_changes.items():
            summary = changes.summary()
            report["agreement"][f"{a}_refinement_set_changes"] = {
                "faces_unrefined": summary["reference_faces"],
                "only_unrefined": summary["misses"],
                "only_refined": summary["extras"],
                "mean_iou_refined_vs_unrefined": summary["mean_iou"],
            }
            print(f"{a}_refinement_set_changes", json.dumps(report["agreement"][f"{a}_refinement_set_changes"]))

    print(json.dumps(report, indent=2))
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
