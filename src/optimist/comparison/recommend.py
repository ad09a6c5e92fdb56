"""Plain-words recommendations derived from the numbers of a results document.

For each task: which method won and by how much (against the runner-up), how sensitive each
method was to its learning rate (from the tuning trials), and which methods diverged. Only
deterministic numbers are used (losses, accuracies, steps), never wall time, so the text is the
same for the same trials on any machine.
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["lr_sensitivity", "recommend"]

NEAR_RATIO = 1.10
"""On a data task, a learning rate is "near the best" when its final validation loss is within
10% of the best tuning trial's; on a 2-D function, when it reached the target gap."""


def _num(x: float | None, spec: str = ".3g") -> str:
    return "n/a" if x is None else format(x, spec)


def lr_sensitivity(document: dict[str, Any], task: str, method: str) -> dict[str, Any] | None:
    """From the tuning trials: the span in decades of the learning rates that came near the
    best (``robust`` >= 1 decade, ``sensitive`` < 0.5), and the smallest LR that diverged."""
    trials = [t for t in document["tuning"] if t["task"] == task and t["method"] == method]
    if not trials:
        return None
    kind = document["tasks"][task]["kind"]
    finished = [t for t in trials if t["state"] == "complete" and t["objective"] is not None]
    diverged = sorted(t["lr"] for t in trials if t["state"] == "diverged")
    if kind == "function":
        near = [t["lr"] for t in finished if t["final"]["steps_to_target"] is not None]
    elif finished:
        best = min(t["objective"] for t in finished)
        near = [t["lr"] for t in finished if t["objective"] <= best * NEAR_RATIO]
    else:
        near = []
    span = math.log10(max(near) / min(near)) if near else None
    if span is None:
        label = "unstable" if not finished else "never close"
    elif span >= 1.0 - 1e-9:
        label = "robust"
    elif span >= 0.5 - 1e-9:
        label = "moderately sensitive"
    else:
        label = "sensitive"
    return {
        "n": len(trials),
        "near": len(near),
        "span_decades": span,
        "diverged_from": diverged[0] if diverged else None,
        "label": label,
    }


COMPETITIVE = 1.5
"""A method whose best tuning loss is over 1.5x the best method's is not called robust."""


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


def _winner_sentence(rows: list[dict[str, Any]], kind: str, target: dict[str, Any]) -> str:
    ranked = [r for r in rows if r["rank"] is not None and r["val_loss"]["mean"] is not None]
    if not ranked:
        return "No method finished a run without diverging."
    first = ranked[0]
    lr = f"lr={_num(first['lr'])}"
    if kind == "function":
        threshold = target["threshold"]
        if first["n_reached_target"]:
            text = (
                f"{first['method']} ({lr}) reached a gap of {threshold:g} fastest, in "
                f"{first['steps_to_target']['mean']:.0f} steps on average"
            )
        else:
            text = (
                f"No method reached a gap of {threshold:g}; {first['method']} ({lr}) got "
                f"closest (final gap {_num(first['val_loss']['mean'])})"
            )
        if len(ranked) > 1:
            second = ranked[1]
            if first["n_reached_target"] and second["n_reached_target"]:
                ratio = second["steps_to_target"]["mean"] / max(first["steps_to_target"]["mean"], 1)
                steps2 = f"{second['steps_to_target']['mean']:.0f}"
                if ratio < 1.1:
                    text += f", about as fast as the runner-up {second['method']} ({steps2})"
                else:
                    text += (
                        f", {ratio:.1f}x fewer steps than the runner-up "
                        f"{second['method']} ({steps2})"
                    )
            elif first["n_reached_target"]:
                text += (
                    f"; the runner-up {second['method']} did not reach it in every run "
                    f"(final gap {_num(second['val_loss']['mean'])})"
                )
            else:
                text += f", ahead of {second['method']} ({_num(second['val_loss']['mean'])})"
        return text + "."
    text = (
        f"{first['method']} ({lr}) had the lowest final validation loss, "
        f"{_num(first['val_loss']['mean'], '.4f')}"
    )
    if first["val_acc"]["mean"] is not None:
        text += f" ({first['val_acc']['mean']:.1%} accuracy)"
    if len(ranked) > 1:
        second = ranked[1]
        gap = second["val_loss"]["mean"] - first["val_loss"]["mean"]
        spread = max(first["val_loss"]["std"] or 0.0, second["val_loss"]["std"] or 0.0)
        text += f"; the runner-up {second['method']} was {gap:.4f} behind"
        if first["val_acc"]["mean"] is not None and second["val_acc"]["mean"] is not None:
            points = 100 * (first["val_acc"]["mean"] - second["val_acc"]["mean"])
            text += f" ({points:+.1f} accuracy points)"
        if first["n_runs"] > 1 and gap <= spread:
            text += ", within the seed-to-seed spread, so treat them as tied"
    return text + "."


def recommend(document: dict[str, Any]) -> dict[str, str]:
    """``{task: paragraph}`` for every task of ``document``."""
    out: dict[str, str] = {}
    for task, info in document["tasks"].items():
        rows = [r for r in document["summary"] if r["task"] == task]
        if not any(r["n_runs"] for r in rows):
            out[task] = "No evaluation run has finished yet: re-run the same command to resume."
            continue
        parts = [_winner_sentence(rows, info["kind"], info["target"])]
        ranked = [r["method"] for r in rows if r["rank"] is not None]
        if len(ranked) > 2:
            parts.append(f"Last: {ranked[-1]}.")
        sens = {r["method"]: lr_sensitivity(document, task, r["method"]) for r in rows}
        if info["kind"] == "data":
            # "Robust" only means something for a method that was competitive at its best.
            bests = {m: _best_objective(document, task, m) for m in sens}
            top = min((b for b in bests.values() if b is not None), default=None)
            for m, v in sens.items():
                b = bests[m]
                if (
                    v
                    and v["label"] == "robust"
                    and (b is None or top is None or b > COMPETITIVE * top)
                ):
                    v["label"] = "never competitive"
        if any(v is not None for v in sens.values()):
            near = (
                "reached the target"
                if info["kind"] == "function"
                else "ended within 10% of the method's best loss"
            )
            robust = [m for m, v in sens.items() if v and v["label"] == "robust"]
            touchy = [m for m, v in sens.items() if v and v["label"] == "sensitive"]
            never = [m for m, v in sens.items() if v and v["label"] in ("never close", "unstable")]
            if robust:
                parts.append(
                    f"Robust to the learning rate (LRs that {near} span a decade or "
                    f"more): {', '.join(robust)}."
                )
            if touchy:
                parts.append(
                    f"Sensitive (only LRs within half a decade {near}): {', '.join(touchy)}."
                )
            if never and info["kind"] == "function":
                parts.append(f"No tuned LR reached the target: {', '.join(never)}.")
            blew = [
                f"{m} at lr >= {_num(v['diverged_from'])}"
                for m, v in sens.items()
                if v and v["diverged_from"] is not None
            ]
            if blew:
                parts.append("Diverged while tuning: " + "; ".join(blew) + ".")
        else:
            parts.append(
                "Learning rates were not tuned (defaults), so this ranking also "
                "reflects how well each default suits the task; use --tune to compare "
                "methods at their best."
            )
        bad = [
            f"{r['method']} ({r['n_diverged']}/{r['n_runs']} runs)" for r in rows if r["n_diverged"]
        ]
        if bad:
            parts.append("Diverged in evaluation: " + ", ".join(bad) + ".")
        elif all(r["n_runs"] for r in rows):
            parts.append("No evaluation run diverged.")
        first = next((r for r in rows if r["rank"] == 1), None)
        if first is not None and not math.isnan(first["lr"] or math.nan):
            parts.append(
                f"Recommendation: start with {first['method']} at lr="
                f"{_num(first['lr'])} on problems like this one."
            )
        out[task] = " ".join(parts)
    return out
