"""The cost of identify's cohort-normalised scores per probe face (``Normalisation.scores``: one probe against
its shortlisted subjects' templates), as it was (the subjects' spreads computed on every call, the cohort cast to
float64 on every call) and as it is (spreads kept per template content by
:class:`service.gallery.normalisation.SpreadCache`, the cohort cast once).

Each identify scores one probe against ``--shortlist`` subjects (identify rescores
:data:`service.recognition.identification.RESCORE_CANDIDATES` = 20) drawn at random from ``--subjects`` subject
templates, with the model's shipped cohort (2 874 LFW templates, k = 10). Subjects and probes are cohort
templates moved by Gaussian noise and normalised again (face-like positions; the cost does not depend on the
values). Timed ways, interleaved per identify so that load changes weigh on all alike:

* ``before``: ``normalised_scores(l2_matrix(p, t), spreads(p, cohort), spreads(t, cohort))``, what
  ``Normalisation.scores`` did before the cache;
* ``kept``: ``Normalisation.scores`` with every subject's spread already kept (an unchanged gallery);
* ``new_templates``: ``Normalisation.scores`` against 20 templates it has never seen (every spread computed and
  kept: the first identify after a start, or after all shortlisted templates changed);
* ``probe_spread``: ``Normalisation.probe_spreads`` alone, which every call computes.

Every call's scores are checked equal (bit for bit) to ``before``'s. Also the memory of a full cache
(:data:`SPREAD_CACHE_SIZE` spreads, ``tracemalloc``). Times in microseconds, p50 and mean over ``--identifies``.
Usage::

    python bench/normalisation_cost.py --out reports/normalisation-cost.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.paths import write_report

WAYS = ("before", "kept", "new_templates", "probe_spread")


def near_faces(rng: np.random.Generator, cohort: npt.NDArray[np.float32], n: int) -> npt.NDArray[np.float32]:
    """``n`` unit vectors, each a random cohort template moved by noise of norm ~0.5."""
    x = cohort[rng.integers(0, len(cohort), n)] + 0.5 * rng.standard_normal((n, cohort.shape[1])) / np.sqrt(128)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def measure(model_id: str, subjects: int, shortlist: int, identifies: int, seed: int) -> dict[str, Any]:
    from service.gallery.calibration import l2_matrix
    from service.gallery.normalisation import (
        SPREAD_CACHE_SIZE,
        SpreadCache,
        load_normalisation,
        normalised_scores,
        spreads,
    )

    norm = load_normalisation(model_id)
    if norm is None:
        raise SystemExit(f"no normalisation for {model_id}")
    cohort, k = norm.cohort, norm.k
    rng = np.random.default_rng(seed)
    templates = near_faces(rng, cohort, subjects)
    norm.subject_spreads(templates)  # every subject seen once
    warm = 20
    rounds = identifies + warm
    probes = near_faces(rng, cohort, rounds)
    shortlists = [templates[rng.choice(subjects, shortlist, replace=False)] for _ in range(rounds)]
    unseen = near_faces(rng, cohort, rounds * shortlist).reshape(rounds, shortlist, -1)

    def before(p: Any, t: Any) -> Any:
        return normalised_scores(l2_matrix(p, t), spreads(p, cohort, k), spreads(t, cohort, k))

    times: dict[str, list[float]] = {w: [] for w in WAYS}
    for i in range(rounds):
        p = probes[i][None]
        calls: dict[str, tuple[Callable[..., Any], tuple[Any, ...]]] = {
            "before": (before, (p, shortlists[i])),
            "kept": (norm.scores, (p, shortlists[i])),
            "new_templates": (norm.scores, (p, unseen[i])),
            "probe_spread": (norm.probe_spreads, (p,)),
        }
        got = {}
        for way, (fn, args) in calls.items():
            start = time.perf_counter()
            got[way] = fn(*args)
            took = time.perf_counter() - start
            if i >= warm:
                times[way].append(took * 1e6)
        assert np.array_equal(got["before"], got["kept"])
        assert np.array_equal(before(p, unseen[i]), got["new_templates"])

    tracemalloc.start()
    full = SpreadCache(np.asarray(cohort, np.float64), k)
    base = tracemalloc.get_traced_memory()[0]
    for _ in range(0, SPREAD_CACHE_SIZE, 4096):
        full(near_faces(rng, cohort, 4096))
    held = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    us = {w: {"p50": round(statistics.median(v), 1), "mean": round(statistics.mean(v), 1)} for w, v in times.items()}
    return {
        "model_id": model_id,
        "cohort": len(cohort),
        "k": k,
        "subjects": subjects,
        "shortlist": shortlist,
        "identifies": identifies,
        "us": us,
        "full_cache": {"spreads": len(full), "mb": round(held / 1e6, 1), "bytes_each": round(held / len(full))},
    }


def main() -> None:
    from embeddings.weights import MODEL_ID

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-id", default=MODEL_ID, help="a model with a normalisation")
    parser.add_argument("--subjects", type=int, default=1000, help="subject templates the shortlists come from")
    parser.add_argument("--shortlist", type=int, default=20, help="subjects scored per identify")
    parser.add_argument("--identifies", type=int, default=2000, help="timed identifies (one probe each)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    result = measure(args.model_id, args.subjects, args.shortlist, args.identifies, args.seed)
    write_report(args.out, result)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
