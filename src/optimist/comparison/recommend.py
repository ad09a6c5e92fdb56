"""The answer: per task a verdict (winner or tied group, margin with its uncertainty, the
learning rate and batch size to use, what to try second), an overall line, and how sensitive each
method is to its learning rate.

Only deterministic numbers are used (losses, accuracies, steps), never wall time, so the words
are the same for the same trials on any machine. The ranking itself is :mod:`ranking`'s.

**Learning-rate sensitivity at equal fidelity.** Successive halving stops poor tuning trials
early, so trials end at different budgets. Every tuning trial records its objective at the
pruner's rungs; a method's trials are compared at the *last rung every one of them reached*
(the fidelity), so a pruned trial is compared with the others at the point where it stopped,
never with their final values. The learning rates whose value there is within
:data:`NEAR_DATA` (10%) of the best on a data task, or within :data:`NEAR_FUNCTION_DECADES`
(half a decade of mean gap) on a 2-D function, are "near the best"; the width of their range in
decades decides: ``robust`` (>= 1 decade), ``moderately sensitive`` (>= 0.5), ``sensitive``.
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["NEAR_DATA", "NEAR_FUNCTION_DECADES", "lr_sensitivity", "recommend", "verdicts"]

NEAR_DATA = 0.10
NEAR_FUNCTION_DECADES = 0.5
COMPETITIVE = 1.5
"""A method whose best tuning loss is over 1.5x the best method's is not called robust."""


def _num(x: float | None, spec: str = ".3g") -> str:
    return "n/a" if x is None else format(x, spec)


def lr_sensitivity(document: dict[str, Any], task: str, method: str) -> dict[str, Any] | None:
    """The method's tuning trials compared at equal fidelity (see the module docstring)."""
    trials = [t for t in document["tuning"] if t["task"] == task and t["method"] == method]
    if not trials:
        return None
    kind = document["tasks"][task]["kind"]
    diverged = sorted(t["lr"] for t in trials if t["state"] == "diverged")
    alive = [t for t in trials if t["state"] in ("complete", "pruned") and t.get("reports")]
    common: set[str] | None = None
    for t in alive:
        keys = {k for k, v in t["reports"].items() if v is not None}
        common = keys if common is None else common & keys
    fidelity = max(common, key=int) if common else None
    points = []
    if fidelity is not None:
        points = [(t["lr"], t["reports"][fidelity], t["state"]) for t in alive]
    near: list[float] = []
    if points:
        best = min(v for _, v, _ in points)
        if kind == "function":
            near = [lr for lr, v, _ in points if v <= best + NEAR_FUNCTION_DECADES]
        else:
            near = [lr for lr, v, _ in points if v <= best * (1 + NEAR_DATA) + 1e-12]
    span = math.log10(max(near) / min(near)) if near else None
    if span is None:
        label = "unstable" if diverged else "not measured"
    elif len(points) < 3:
        label = "too few trials"
    elif span >= 1.0 - 1e-9:
        label = "robust"
    elif span >= 0.5 - 1e-9:
        label = "moderately sensitive"
    else:
        label = "sensitive"
    n_evals = document["protocol"].get("n_evals") or 0
    return {
        "n": len(trials),
        "n_compared": len(points),
        "fidelity": None if fidelity is None else int(fidelity),
        "fidelity_fraction": (int(fidelity) / n_evals) if fidelity and n_evals else None,
        "points": [{"lr": lr, "value": v, "state": st} for lr, v, st in points],
        "near": len(near),
        "span_decades": span,
        "diverged_from": diverged[0] if diverged else None,
        "label": label,
    }


def _best_objective(document: dict[str, Any], task: str, method: str) -> float | None:
    values = [
        t["objective"]
        for t in document["tuning"]
        if t["task"] == task
        and t["method"] == method
        and t["state"] == "complete"
        and t["objective"] is not None
    ]
    return min(values, default=None)


def method_label(document: dict[str, Any], row: dict[str, Any], lr: bool = True) -> str:
    """``adam (lr 0.00316, batch 32)``: the method with everything needed to reproduce it."""
    info = document["methods"].get(row["method"], {})
    parts = []
    if lr and row.get("lr") is not None:
        parts.append(f"lr {_num(row['lr'])}")
    kwargs = {**(info.get("kwargs") or {}), **(row.get("tuned_settings") or {})}
    parts += [f"{k} {_num(v) if isinstance(v, float) else v}" for k, v in kwargs.items()]
    if document["tasks"][row["task"]]["kind"] == "data":
        batch = row.get("batch_size") or info.get("batch_size")
        if batch is not None:
            parts.append(f"batch {batch}")
    return f"{row['method']} ({', '.join(parts)})" if parts else row["method"]


def _reached(row: dict[str, Any]) -> str:
    return f"{row['n_reached_target']}/{row['n_runs']}"


def _performance(document: dict[str, Any], row: dict[str, Any]) -> str:
    info = document["tasks"][row["task"]]
    if info["kind"] == "function":
        threshold = info["target"]["threshold"]
        if row["n_reached_target"]:
            return (
                f"reached a gap of {threshold:g} in {row['steps_to_target']['mean']:.0f} steps and "
                f"stayed there in {_reached(row)} seeds (final gap {_num(row['val_loss']['mean'])})"
            )
        gap = _num(row["val_loss"]["mean"])
        return f"ended at a gap of {gap} ({_reached(row)} seeds reached {threshold:g})"
    text = f"validation loss {_num(row['val_loss']['mean'], '.4f')}"
    half = row["score"]["ci_half_width"]
    if half is not None:
        text += f" ± {half:.4f}"
    if row["val_acc"]["mean"] is not None:
        text += f", accuracy {row['val_acc']['mean']:.1%}"
    return text + f" ({_reached(row)} seeds reached the target)"


def _margin(document: dict[str, Any], best: dict[str, Any], other: dict[str, Any]) -> str:
    """The winner's margin over ``other`` in the task's own units, with its 95% CI."""
    kind = document["tasks"][best["task"]]["kind"]
    pair = other.get("vs_best")  # the paired comparison of the best method with ``other``
    if not pair or pair.get("diff") is None:
        return ""
    half = pair.get("half_width")
    if kind == "data":
        text = f"{pair['diff']:.4f} lower validation loss"
        if half is not None:
            text += f" (95% CI ± {half:.4f}, {pair['n']} paired seeds)"
        else:
            text += " (1 seed: no spread to judge by)"
        return text
    if best["n_reached_target"] and other["n_reached_target"]:
        fewer = other["steps_to_target"]["mean"] - best["steps_to_target"]["mean"]
        if round(fewer) == 0:
            return f"none: both reached the target in {best['steps_to_target']['mean']:.0f} steps"
        return f"{fewer:.0f} fewer steps to the target"
    return f"final gap {_num(best['val_loss']['mean'])} against {_num(other['val_loss']['mean'])}"


def task_verdict(document: dict[str, Any], task: str) -> dict[str, Any]:
    """The verdict of one task: ``{"winners", "text", "lr", "batch_size", "second"}``."""
    rows = [r for r in document["summary"] if r["task"] == task]
    ranked = [r for r in rows if r["rank"] is not None]
    if not ranked:
        text = (
            "No method finished a run yet: re-run the same command to resume."
            if not any(r["n_runs"] for r in rows)
            else "No method finished a run without diverging or failing: no recommendation."
        )
        return {"winners": [], "text": text, "lr": None, "batch_size": None, "second": None}
    best = ranked[0]
    winners = [r for r in ranked if r["rank"] == 1]
    tied = [r for r in winners if r is not best]
    others = [r for r in ranked if r["rank"] != 1]
    text = f"Use {method_label(document, best)}: {_performance(document, best)}."
    if tied:
        text += (
            f" Tied with {', '.join(method_label(document, r) for r in tied)}: the difference is "
            "within the seed-to-seed spread or below the resolution of the measurement."
        )
    second = tied[0] if tied else (others[0] if others else None)
    if second is not None:
        margin = _margin(document, best, second)
        if margin:
            text += f" Margin over {second['method']}: {margin}."
        text += f" Try second: {method_label(document, second)}."
    not_ranked = [r["method"] for r in rows if r["rank"] is None and r["n_runs"]]
    if not_ranked:
        text += (
            f" Not ranked (no run finished without diverging or failing): {', '.join(not_ranked)}."
        )
    if not document["protocol"]["tuned"]:
        text += (
            " Learning rates were not tuned (defaults): use --tune to compare methods at "
            "their best."
        )
    return {
        "winners": [r["method"] for r in winners],
        "text": text,
        "lr": best["lr"],
        "batch_size": best.get("batch_size"),
        "second": None if second is None else second["method"],
    }


def overall_verdict(document: dict[str, Any], per_task: dict[str, dict[str, Any]]) -> str:
    """One line across tasks: the methods in the winning group most often."""
    counts: dict[str, int] = {}
    decided = [v for v in per_task.values() if v["winners"]]
    for v in decided:
        for m in v["winners"]:
            counts[m] = counts.get(m, 0) + 1
    if not decided:
        return "No task has a result yet."
    top = max(counts.values())
    leaders = [m for m in document["methods"] if counts.get(m) == top]
    if len(decided) == 1:
        return f"One task: {' and '.join(leaders)} came first."
    text = (
        f"Across {len(decided)} tasks, {' and '.join(leaders)} won or tied for first on {top} of "
        f"{len(decided)}"
    )
    if top < len(decided):
        text += "; no method won everywhere, so pick by the task most like yours"
    return text + "."


def verdicts(document: dict[str, Any]) -> dict[str, Any]:
    """``{"overall": line, "tasks": {task: task_verdict}}``."""
    per_task = {task: task_verdict(document, task) for task in document["tasks"]}
    return {"overall": overall_verdict(document, per_task), "tasks": per_task}


def _sensitivity_text(document: dict[str, Any], task: str, rows: list[dict[str, Any]]) -> str:
    info = document["tasks"][task]
    sens = {r["method"]: lr_sensitivity(document, task, r["method"]) for r in rows}
    if not any(v is not None for v in sens.values()):
        return ""
    if info["kind"] == "data":
        bests = {m: _best_objective(document, task, m) for m in sens}
        top = min((b for b in bests.values() if b is not None), default=None)
        for m, v in sens.items():
            b = bests[m]
            if v and v["label"] == "robust" and (b is None or top is None or b > COMPETITIVE * top):
                v["label"] = "never competitive"
    near = (
        f"within {NEAR_FUNCTION_DECADES:g} decade of the best mean log-gap"
        if info["kind"] == "function"
        else f"within {NEAR_DATA:.0%} of the best validation loss"
    )
    parts = []
    robust = [m for m, v in sens.items() if v and v["label"] == "robust"]
    touchy = [m for m, v in sens.items() if v and v["label"] == "sensitive"]
    if robust:
        parts.append(
            f"Robust to the learning rate (LRs {near} span a decade or more): {', '.join(robust)}."
        )
    if touchy:
        parts.append(f"Sensitive (LRs {near} span under half a decade): {', '.join(touchy)}.")
    if robust or touchy:
        parts.append(
            "Tuning trials are compared at equal fidelity (the last point all of a "
            "method's trials reached)."
        )
    blew = [
        f"{m} at lr >= {_num(v['diverged_from'])}"
        for m, v in sens.items()
        if v and v["diverged_from"] is not None
    ]
    if blew:
        parts.append("Diverged while tuning: " + "; ".join(blew) + ".")
    return " ".join(parts)


def recommend(document: dict[str, Any]) -> dict[str, str]:
    """``{task: paragraph}``: the verdict, then learning-rate sensitivity and divergences."""
    out: dict[str, str] = {}
    for task in document["tasks"]:
        rows = [r for r in document["summary"] if r["task"] == task]
        parts = [task_verdict(document, task)["text"]]
        sensitivity = _sensitivity_text(document, task, rows)
        if sensitivity:
            parts.append(sensitivity)
        bad = [
            f"{r['method']} ({r['n_diverged']}/{r['n_runs']} runs)" for r in rows if r["n_diverged"]
        ]
        if bad:
            parts.append("Diverged in evaluation: " + ", ".join(bad) + ".")
        out[task] = " ".join(parts)
    return out
