"""The gate: is the fine-tuned model better than the model it started from, beyond noise?

Both models embed the same gate people (validation people never used for model selection); ``operating.compare``
gives the paired-bootstrap 95% interval of each difference (after - before). The model is ACCEPTED only when

- the interval of ``score`` (the mean of TAR@FAR 1e-3 and TPIR@FPIR 1%) lies above 0: better at the operating
  points serving uses, beyond noise; and
- no operating point (accuracy, TAR@FAR 1e-3, TPIR@FPIR 1%) is worse beyond noise (its interval lies below 0).

Otherwise it is REJECTED: ``facerec train`` says "no better model found" with the figures, and the model is not
registered (or, kept on request, is marked rejected and cannot be selected).
"""

from __future__ import annotations

from typing import Any

GATE_RULE = (
    "accepted iff the paired-bootstrap 95% interval (over gate people) of the change in score = mean(TAR@FAR 1e-3, "
    "TPIR@FPIR 1%) lies above 0 and no operating point's interval (accuracy, TAR@FAR 1e-3, TPIR@FPIR 1%) lies below 0"
)
OPERATING_POINTS = ("accuracy", "tar_at_far_1e-3", "tpir_at_fpir_1e-2")
LABELS = {
    "accuracy": "accuracy",
    "tar_at_far_1e-3": "TAR@FAR1e-3",
    "tpir_at_fpir_1e-2": "TPIR@FPIR1%",
    "score": "score",
}


def judge(comparison: dict[str, Any]) -> dict[str, Any]:
    """``{"accepted": bool, "reason": str}`` for an ``operating.compare`` result (see the module docstring)."""
    ci = comparison["delta_ci95"]
    worse = [LABELS[m] for m in OPERATING_POINTS if ci[m][1] < 0]
    if worse:
        return {"accepted": False, "reason": f"worse beyond noise at {', '.join(worse)}"}
    if ci["score"][0] <= 0:
        return {
            "accepted": False,
            "reason": "not better beyond noise at the operating point (the score's 95% interval includes 0 or less)",
        }
    return {"accepted": True, "reason": "better beyond noise at the operating point, and worse at none"}


def summary_lines(comparison: dict[str, Any], where: str) -> list[str]:
    """One line per figure: ``before -> after (delta, 95% interval)``, for the CLI."""
    b, a, d, ci = comparison["before"], comparison["after"], comparison["delta"], comparison["delta_ci95"]
    lines = [
        f"{where}: {b['people']} people, {b['same_pairs']} same / {b['different_pairs']} different pairs, "
        f"{b['probes']} probes"
    ]
    for m in (*OPERATING_POINTS, "score"):
        lines.append(
            f"  {LABELS[m]:<12} {b[m]:.4f} -> {a[m]:.4f}  (change {d[m]:+.4f}, 95% interval "
            f"[{ci[m][0]:+.4f}, {ci[m][1]:+.4f}])"
        )
    return lines
