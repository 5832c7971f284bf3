"""LFW open-set identification: person-level rules compared, calibration fitted on other people, honesty checked.

Protocol (LFW split by person, seeded):

* half A of the people ("fit") gives the calibration tables (:func:`service.gallery.calibration.fit_calibration`)
  and the cohort normalisation with its own table (:func:`service.gallery.normalisation.fit_normalisation`);
* half B ("eval") holds the galleries and probes: 30% of its people are *strangers* (never enrolled; up to 10
  probes each), the rest the enrolment pool. A gallery of G people takes G of the pool, each enrolled with 1-3
  random photos (at most all but one of a person's photos); the other photos (up to 5 a person) are mated probes.
  Figures are means over 20 random galleries for sizes <= 100, 5 for 1,000 and 1 for all available people.
* For each subject rule (nearest face, mean template, quality-weighted template, their combination, and the
  template's cohort-normalised score identify uses, ``template-norm``) and gallery size: TPIR (the person
  named, rank 1, within the threshold) at the threshold where the *measured* FPIR (strangers named as anyone)
  is <= 1% and <= 0.1%; and, with the calibration's threshold for a target FIR, the estimate it reports next
  to the measured FPIR.

Usage (embeddings from bench/lfw_embeddings.py):

    .venv/bin/python bench/openset.py --embeddings reports/lfw_embeddings.npz \
        --detections reports/lfw-view2/detections.json --out reports/openset.json [--write-tables PATH]
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from embeddings.dataset import read_detection_cache
from embeddings.pose import estimate_pose
from service.gallery.calibration import Calibration, comparisons, fit_calibration, sample_people, subject_scores
from service.gallery.matching import RULE, RULES, quality_weight, template
from service.gallery.normalisation import SUFFIX as NORM_SUFFIX
from service.gallery.normalisation import Normalisation, fit_normalisation

TARGETS = (0.01, 0.001)
STRANGER_SHARE = 0.3
MAX_STRANGER_PROBES = 10
MAX_MATED_PROBES = 5
NORM_RULE = "template-norm"
"""The template rule with the service's cohort normalisation (:mod:`service.gallery.normalisation`: cohort and
score table fitted on the fit half's people with :func:`fit_normalisation`)."""
REPEATS_SMALL = 20
"""Random galleries averaged for sizes <= 100 people (a 10-person gallery's FPIR depends on who is in it)."""
REPEATS_LARGE = 5
"""Random galleries averaged for larger sizes short of all available people."""


def load(embeddings: Path, detections: Path | None) -> tuple[npt.NDArray[np.float32], npt.NDArray[Any], list[str]]:
    d = np.load(embeddings, allow_pickle=False)
    return np.asarray(d["embeddings"], np.float32), np.asarray(d["names"]).astype(str), list(d["paths"].astype(str))


def image_weights(paths: list[str], detections: Path | None) -> npt.NDArray[np.float64]:
    """:func:`matching.quality_weight` of each image from its cached detection (1 when unknown)."""
    if detections is None or not detections.is_file():
        return np.ones(len(paths))
    cached, _ = read_detection_cache(detections)
    out = np.ones(len(paths))
    for i, p in enumerate(paths):
        if (det := cached.get(p)) is not None:
            pose = estimate_pose(det.landmarks, det.box)
            size = min(det.box.width, det.box.height)
            out[i] = quality_weight({"face_size": size, "yaw": pose.yaw if pose else None})
    return out


def split_people(names: npt.NDArray[Any], seed: int) -> tuple[set[str], set[str]]:
    people = np.unique(names)
    perm = np.random.default_rng(seed).permutation(people)
    half = len(perm) // 2
    return set(perm[:half].tolist()), set(perm[half:].tolist())


def draw_gallery(
    members: dict[str, npt.NDArray[np.int64]], pool: list[str], g: int, rng: np.random.Generator
) -> tuple[list[npt.NDArray[np.int64]], npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """``g`` random pool people, each enrolled with 1-3 random photos (at most all but one): their enrolled image
    indices, the mated probes (up to :data:`MAX_MATED_PROBES` other photos each) and each probe's gallery row."""
    chosen = list(rng.permutation(pool)[:g])
    enrolled, mated, mated_owner = [], [], []
    for s, p in enumerate(chosen):
        m = rng.permutation(members[p])
        k = int(rng.integers(1, 4))
        k = min(k, len(m) - 1) if len(m) > 1 else 1
        enrolled.append(m[:k])
        probes = m[k : k + MAX_MATED_PROBES]
        mated.extend(probes.tolist())
        mated_owner.extend([s] * len(probes))
    return enrolled, np.asarray(mated, dtype=np.int64), np.asarray(mated_owner, dtype=np.int64)


def split_strangers(
    names: npt.NDArray[Any], people: list[str], rng: np.random.Generator
) -> tuple[dict[str, npt.NDArray[np.int64]], list[str], npt.NDArray[np.int64]]:
    """:data:`STRANGER_SHARE` of ``people`` as strangers (up to :data:`MAX_STRANGER_PROBES` probes each), the rest
    the enrolment pool: each person's image indices, the pool and the stranger probes."""
    members = {p: np.flatnonzero(names == p) for p in people}
    order = rng.permutation(people)
    n_strangers = int(len(order) * STRANGER_SHARE)
    strangers, pool = list(order[:n_strangers]), list(order[n_strangers:])
    return members, pool, np.concatenate([rng.permutation(members[p])[:MAX_STRANGER_PROBES] for p in strangers])


def oracle_tpir(
    mated: npt.NDArray[np.float64], strangers: npt.NDArray[np.float64], owner: npt.NDArray[np.int64], target: float
) -> tuple[float, float]:
    """TPIR (rank 1 and within the threshold) at the largest threshold whose measured FPIR is ``<= target``, and
    that threshold; ``mated``/``strangers``: (probes, subjects) scores, lower = more alike."""
    right = mated.argmin(axis=1) == owner
    best_s = np.sort(strangers.min(axis=1))
    allowed = math.floor(target * len(best_s))
    t = float(best_s[allowed] - 1e-9) if allowed < len(best_s) else math.inf
    return float((right & (mated.min(axis=1) <= t)).mean()), t


def _one_gallery(
    x: npt.NDArray[np.float32],
    members: dict[str, npt.NDArray[np.int64]],
    pool: list[str],
    stranger_idx: npt.NDArray[np.int64],
    weights: npt.NDArray[np.float64],
    tables: dict[str, Calibration],
    g: int,
    rng: np.random.Generator,
    norm: Normalisation,
) -> list[dict[str, Any]]:
    """One random gallery of ``g`` pool people: a row per rule, and one for the normalised template score
    (:data:`NORM_RULE`, what identify uses when the model has a normalisation)."""
    enrolled, mated_idx, owner = draw_gallery(members, pool, g, rng)
    faces = sum(len(e) for e in enrolled)
    rows: list[dict[str, Any]] = []
    for rule in (*RULES, NORM_RULE):
        subj = [x[e] for e in enrolled]
        if rule == NORM_RULE:
            tm = np.stack([template(s) for s in subj])
            sm, ss = norm.scores(x[mated_idx], tm), norm.scores(x[stranger_idx], tm)
        else:
            w = [weights[e] for e in enrolled] if rule == "weighted" else None
            sm = subject_scores(x[mated_idx], subj, rule=rule, weights=w)  # type: ignore[arg-type]
            ss = subject_scores(x[stranger_idx], subj, rule=rule, weights=w)  # type: ignore[arg-type]
        best_m, arg_m = sm.min(axis=1), sm.argmin(axis=1)
        right = arg_m == owner
        best_s = np.sort(ss.min(axis=1))
        row: dict[str, Any] = {
            "gallery_people": g,
            "gallery_faces": faces,
            "rule": rule,
            "mated_probes": len(mated_idx),
            "stranger_probes": len(best_s),
            "rank1": float(right.mean()),
        }
        for target in TARGETS:
            key = f"{target:g}"
            row[f"tpir@fpir<={key}"], t_oracle = oracle_tpir(sm, ss, owner, target)
            row[f"threshold@fpir<={key}"] = min(t_oracle, 2.0)
            cal = tables.get(rule)
            if cal is not None:
                n = comparisons(rule, g, faces)
                t_cal = cal.threshold_for_fir(target, n)
                row[f"calibrated_threshold@{key}"] = t_cal
                row[f"estimate@{key}"] = cal.false_identification_rate(t_cal, n)
                row[f"measured_fpir@{key}"] = float((best_s <= t_cal).mean())
                row[f"tpir@calibrated_{key}"] = float((right & (best_m <= t_cal)).mean())
        rows.append(row)
    return rows


def evaluate(
    x: npt.NDArray[np.float32],
    names: npt.NDArray[Any],
    weights: npt.NDArray[np.float64],
    eval_people: set[str],
    tables: dict[str, Calibration],
    sizes: list[int],
    seed: int,
    norm: Normalisation,
) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed + 1)
    members, pool, stranger_idx = split_strangers(names, sorted(eval_people), rng)
    rows: list[dict[str, Any]] = []
    for size in sizes:
        g = len(pool) if size <= 0 or size > len(pool) else size
        repeats = 1 if g == len(pool) else REPEATS_SMALL if g <= 100 else REPEATS_LARGE
        runs = [_one_gallery(x, members, pool, stranger_idx, weights, tables, g, rng, norm) for _ in range(repeats)]
        for i, first in enumerate(runs[0]):
            row = dict(first)
            for key, value in first.items():
                if isinstance(value, float):
                    row[key] = float(np.nanmean([r[i][key] for r in runs]))
            row["repeats"] = repeats
            row["mated_probes"] = int(sum(r[i]["mated_probes"] for r in runs))
            rows.append(row)
    return rows


def print_rows(rows: list[dict[str, Any]]) -> None:
    head = (
        f"{'people':>6} {'faces':>5} {'rule':>15} {'rank1':>6} | {'TPIR@FPIR<=1%':>13} {'TPIR@<=0.1%':>11} | "
        f"{'t(1%)':>6} {'est':>7} {'meas':>7} {'TPIR':>6} | {'t(0.1%)':>7} {'est':>7} {'meas':>7} {'TPIR':>6}"
    )
    print(head)
    for r in rows:
        cal = ""
        for key in ("0.01", "0.001"):
            if f"estimate@{key}" in r:
                cal += (
                    f" | {r[f'calibrated_threshold@{key}']:6.3f} {r[f'estimate@{key}']:7.4f} "
                    f"{r[f'measured_fpir@{key}']:7.4f} {r[f'tpir@calibrated_{key}']:6.4f}"
                )
        print(
            f"{r['gallery_people']:6d} {r['gallery_faces']:5d} {r['rule']:>15} {r['rank1']:6.4f} | "
            f"{r['tpir@fpir<=0.01']:13.4f} {r['tpir@fpir<=0.001']:11.4f}{cal}"
        )


def summarize_seeds(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean of every figure over the seeds, per (gallery size position, rule)."""
    out = []
    for i, first in enumerate(runs[0]["rows"]):
        same = [r["rows"][i] for r in runs]
        row: dict[str, Any] = {"rule": first["rule"], "seeds": len(runs)}
        for key, value in first.items():
            if isinstance(value, int | float) and key != "rule":
                row[key] = float(np.mean([x[key] for x in same]))
        row["gallery_people"] = round(row["gallery_people"])
        row["gallery_faces"] = round(row["gallery_faces"])
        for key in ("0.01", "0.001"):
            if f"estimate@{key}" in first:
                ratios = [x[f"estimate@{key}"] / max(x[f"measured_fpir@{key}"], 1e-12) for x in same]
                row[f"estimate/measured@{key} range"] = [float(min(ratios)), float(max(ratios))]
        out.append(row)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--embeddings", type=Path, default=Path("reports/lfw_embeddings.npz"))
    parser.add_argument("--detections", type=Path, default=Path("reports/lfw-view2/detections.json"))
    parser.add_argument("--out", type=Path, default=Path("reports/openset.json"))
    parser.add_argument("--sizes", default="10,100,1000,0", help="gallery sizes in people; 0 = all available")
    parser.add_argument("--seeds", default="0", help="comma-separated split seeds")
    parser.add_argument("--model-id", default="facenet-20170512-110547")
    parser.add_argument("--write-tables", type=Path, default=None, help=f"save the first seed's {RULE!r} tables")
    parser.add_argument(
        "--eval-embeddings",
        type=Path,
        default=None,
        help="measure on these embeddings of the same images (e.g. the served bf16 encoder's) while the tables and "
        "cohort are fitted on --embeddings",
    )
    args = parser.parse_args()

    start = time.perf_counter()
    x, names, paths = load(args.embeddings, args.detections)
    weights = image_weights(paths, args.detections)
    x_eval = x
    if args.eval_embeddings is not None:
        x_eval, _, eval_paths = load(args.eval_embeddings, None)
        if eval_paths != paths:
            raise SystemExit(f"{args.eval_embeddings} does not embed the same images as {args.embeddings}")
    sizes = [int(s) for s in args.sizes.split(",")]
    report: dict[str, Any] = {"images": len(x), "people": len(np.unique(names)), "runs": []}
    print(f"{len(x)} images of {report['people']} people")
    for seed in (int(s) for s in args.seeds.split(",")):
        fit_people, eval_people = split_people(names, seed)
        fit = np.isin(names, list(fit_people))
        source = f"LFW, {len(fit_people)} of {report['people']} people (split seed {seed}), bench/openset.py"
        tables: dict[str, Calibration] = {}
        for rule in RULES:
            tables[rule] = fit_calibration(
                x[fit], names[fit], model_id=args.model_id, source=source, rule=rule, seed=seed,
                weights=weights[fit],
            )  # fmt: skip
        sample = sample_people(x[fit], names[fit], seed=seed)
        norm = fit_normalisation(sample, model_id=args.model_id, source=source)
        tables[NORM_RULE] = norm.table
        if args.write_tables is not None and seed == int(args.seeds.split(",")[0]):
            tables[RULE].save(args.write_tables)
            norm_path = args.write_tables.with_name(args.write_tables.name.removesuffix(".npz") + NORM_SUFFIX)
            norm.save(norm_path)
            print(f"wrote the {RULE!r} tables to {args.write_tables} and the normalisation to {norm_path}")
        rows = evaluate(x_eval, names, weights, eval_people, tables, sizes, seed, norm)
        print(f"\nseed {seed}: fit on {len(fit_people)} people, measured on {len(eval_people)} others")
        print_rows(rows)
        report["runs"].append({"seed": seed, "fit_people": len(fit_people), "rows": rows})
    if len(report["runs"]) > 1:
        report["mean"] = summarize_seeds(report["runs"])
        print(f"\nmean over {len(report['runs'])} seeds (all available: mean size)")
        print_rows(report["mean"])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    print(f"\n{time.perf_counter() - start:.0f} s -> {args.out}")


if __name__ == "__main__":
    main()
