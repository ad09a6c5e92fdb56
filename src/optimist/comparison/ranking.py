"""The ranking rule: one score per evaluation run, paired comparisons across seeds, ties.

**Score of a run** (lower is better):

* data task: the final validation loss on the whole validation set;
* 2-D function: ``steps_to_target / steps`` when the run *ends* within the target gap (the first
  step from which it stayed there; a run that reached the target and left it has not reached
  it), else ``1 + log10(final_gap / target)``, the decades it ended above the target. Reaching
  the target sooner is better than later, which is better than ending short of it, and among
  those that end short, the closer the better.

**Order.** Methods with fewer failed runs (diverged or errored) come first; then by mean score.
A method with no complete run is not ranked at all (and never recommended).

**Ties.** Two methods are compared on the seeds both completed. Seeds are paired (common random
numbers: the same initial weights and data order), so the comparison is on the per-seed
differences: their mean ``d`` and the half-width ``h`` of its 95% confidence interval
(Student's t, ``n - 1`` degrees of freedom). The better method *beats* the other when
``d > max(h, resolution)``; otherwise they are *tied*. ``resolution`` is the smallest
difference worth acting on: 2% of the budget in steps (or 0.02 decades of gap) on a function,
1% of the better loss on a data task. With one seed there is no spread, so only the resolution
decides. A method's rank is 1 + the number of methods that beat it (so tied methods share a
rank: 1, 1, 3).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable
from typing import Any

__all__ = [
    "FUNCTION_RESOLUTION",
    "DATA_RESOLUTION",
    "compare_pair",
    "rank_task",
    "run_score",
    "t_quantile",
]

FUNCTION_RESOLUTION = 0.02
"""Score units on a 2-D function: 2% of the step budget, or 0.02 decades of final gap."""
DATA_RESOLUTION = 0.01
"""Relative to the better method's mean validation loss."""

# two-sided 95% quantiles of Student's t, by degrees of freedom
_T975 = {
    1: 12.706,
    2: 4.303,
    3: 3.182,
    4: 2.776,
    5: 2.571,
    6: 2.447,
    7: 2.365,
    8: 2.306,
    9: 2.262,
    10: 2.228,
    12: 2.179,
    15: 2.131,
    20: 2.086,
    30: 2.042,
    60: 2.000,
}


def t_quantile(df: int) -> float:
    """The 97.5% quantile of Student's t with ``df`` degrees of freedom (table, rounded down to
    the nearest tabulated ``df``; 1.96 beyond 60)."""
    if df < 1:
        return math.inf
    if df > 60:
        return 1.96
    return _T975[max(k for k in _T975 if k <= df)]


def run_score(run: dict[str, Any], kind: str, target: dict[str, Any]) -> float | None:
    """The score of one evaluation run (None when it did not complete)."""
    if run.get("state") != "complete" or not run.get("final"):
        return None
    final = run["final"]
    if kind == "data":
        value = final.get("val_loss")
        return value if isinstance(value, (int, float)) and math.isfinite(value) else None
    gap = final.get("val_loss")
    if gap is None or not math.isfinite(gap):
        return None
    threshold = target["threshold"]
    steps = max(int(final.get("steps") or 1), 1)
    if final.get("steps_to_target") is not None and gap <= threshold:
        return final["steps_to_target"] / steps
    return 1.0 + math.log10(max(gap, 1e-300) / threshold)


def compare_pair(
    better: dict[Any, float], worse: dict[Any, float], resolution: float
) -> dict[str, Any]:
    """Paired comparison of two methods' per-seed scores (``{seed: score}``).

    Returns ``{"n", "diff", "half_width", "beats"}``: ``diff`` is the mean of worse - better over
    the common seeds, ``half_width`` its 95% CI half-width (None with one seed), ``beats`` whether
    the difference is larger than both the CI half-width and ``resolution``."""
    seeds = sorted(set(better) & set(worse), key=str)
    if not seeds:
        return {"n": 0, "diff": None, "half_width": None, "beats": False}
    diffs = [worse[s] - better[s] for s in seeds]
    mean = statistics.fmean(diffs)
    half = None
    if len(diffs) > 1:
        half = t_quantile(len(diffs) - 1) * statistics.stdev(diffs) / math.sqrt(len(diffs))
    beats = mean > max(half or 0.0, resolution)
    return {"n": len(diffs), "diff": mean, "half_width": half, "beats": beats}


def _resolution(kind: str, scores: Iterable[float]) -> float:
    if kind == "function":
        return FUNCTION_RESOLUTION
    values = [abs(v) for v in scores]
    return DATA_RESOLUTION * (statistics.fmean(values) if values else 0.0)


def rank_task(
    rows: list[dict[str, Any]], runs: list[dict[str, Any]], kind: str, target: dict[str, Any]
) -> list[dict[str, Any]]:
    """Fill ``rank``, ``score``, ``tied_with``, ``beaten_by`` and ``vs_best`` of one task's
    summary rows (from that task's evaluation runs); returns the rows best first."""
    per_method: dict[str, dict[Any, float]] = {}
    for r in runs:
        score = run_score(r, kind, target)
        if score is not None:
            per_method.setdefault(r["method"], {})[r["seed"]] = score
    for row in rows:
        scores = per_method.get(row["method"], {})
        values = list(scores.values())
        half = None
        if len(values) > 1:
            half = t_quantile(len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values))
        row["score"] = {
            "mean": statistics.fmean(values) if values else None,
            "ci_half_width": half,
            "n": len(values),
        }
        row["n_failed"] = row["n_runs"] - len(values)

    def order(row: dict[str, Any]) -> tuple:
        mean = row["score"]["mean"]
        return (mean is None, row["n_failed"], math.inf if mean is None else mean, row["method"])

    ranked = sorted(rows, key=order)
    scored = [r for r in ranked if r["score"]["mean"] is not None]
    for row in ranked:
        row["tied_with"], row["beaten_by"], row["vs_best"] = [], [], None
        row["rank"] = None
    for i, row in enumerate(scored):
        mine = per_method[row["method"]]
        for j, other in enumerate(scored):
            if i == j:
                continue
            theirs = per_method[other["method"]]
            first, second = (other, row) if j < i else (row, other)
            a, b = (theirs, mine) if j < i else (mine, theirs)
            resolution = _resolution(kind, [first["score"]["mean"], second["score"]["mean"]])
            result = compare_pair(a, b, resolution)
            # Fewer failed runs wins outright; otherwise the paired test decides.
            if first["n_failed"] < second["n_failed"]:
                result["beats"] = True
            if j < i and result["beats"]:
                row["beaten_by"].append(other["method"])
            elif not result["beats"]:
                row["tied_with"].append(other["method"])
            if j == 0 and i > 0:
                row["vs_best"] = {k: result[k] for k in ("n", "diff", "half_width")}
    previous = 1
    for row in scored:
        rank = max(previous, 1 + len(row["beaten_by"]))
        row["rank"] = previous = rank
    if scored and len(scored) > 1:
        best, runner_up = scored[0], scored[1]
        pair = compare_pair(
            per_method[best["method"]],
            per_method[runner_up["method"]],
            _resolution(kind, [best["score"]["mean"], runner_up["score"]["mean"]]),
        )
        best["vs_best"] = None
        best["vs_next"] = {k: pair[k] for k in ("n", "diff", "half_width")}
        best["vs_next"]["method"] = runner_up["method"]
    for row in ranked:
        row.setdefault("vs_next", None)
    return ranked
