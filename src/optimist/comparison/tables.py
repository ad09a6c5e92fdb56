"""The summary table of a task, defined once and shown three ways: the HTML report, the terminal
(a ``rich`` table that wraps to the window) and a pandas DataFrame (``CompareResult.to_pandas``).

Every row says what the method is: optimizer settings, batch size and learning rate, so that a
line can be reproduced as written; throughput is given per example as well as per step.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["columns", "fairness", "rows", "summary_frame", "terminal_tables"]


def _g(value: Any, spec: str = ".3g") -> str:
    return "–" if value is None else format(value, spec)


def _mean_ci(row: dict[str, Any], key: str, spec: str, scale: float = 1.0) -> str:
    stats = row[key]
    if stats["mean"] is None:
        return "–"
    text = format(stats["mean"] * scale, spec)
    if stats["n"] > 1:
        text += " ± " + format(stats["std"] * scale, spec)
    return text


SHORT = {
    "val_loss": "val loss",
    "val_acc": "acc %",
    "reached": "k/n",
    "examples_per_s": "examples/s",
    "to_target": "steps to target",
    "tied_with": "tied with",
}
TERMINAL = {"rank", "method", "batch", "lr", "val_loss", "val_acc", "reached", "health"}
TERMINAL |= {"tied_with"}
TERMINAL_DATA = TERMINAL | {"examples_per_s"}
TERMINAL_FUNCTION = (TERMINAL - {"batch"}) | {"to_target"}


def columns(kind: str, compact: bool = False) -> list[tuple[str, str]]:
    """``(key, header)`` of the table's columns on a task of ``kind`` (``compact``: the ones the
    terminal shows; the report and the DataFrame have them all)."""
    if compact:
        keep = TERMINAL_DATA if kind == "data" else TERMINAL_FUNCTION
        short = SHORT if kind == "data" else {**SHORT, "val_loss": "final gap"}
        return [(k, short.get(k, h)) for k, h in columns(kind) if k in keep]
    head = [("rank", "rank"), ("method", "method"), ("settings", "settings"), ("batch", "batch")]
    head += [("lr", "lr")]
    if kind == "data":
        head += [
            ("val_loss", "val loss (mean ± sd)"),
            ("val_acc", "val acc %"),
            ("test_acc", "test acc %"),
            ("reached", "reached (k/n)"),
            ("to_target", "epochs to target"),
            ("examples_per_s", "examples/s"),
        ]
    else:
        head += [
            ("val_loss", "final gap"),
            ("reached", "reached (k/n)"),
            ("to_target", "steps to target"),
        ]
    head += [("steps", "steps"), ("steps_per_s", "steps/s"), ("diverged", "diverged")]
    head += [("health", "health"), ("tied_with", "tied with")]
    return head


def rows(document: dict[str, Any], task: str) -> list[dict[str, str]]:
    """The task's summary rows, best first, formatted for reading."""
    info = document["tasks"][task]
    data = info["kind"] == "data"
    out = []
    for r in document["summary"]:
        if r["task"] != task:
            continue
        method = document["methods"].get(r["method"], {})
        kwargs = {**(method.get("kwargs") or {}), **(r.get("tuned_settings") or {})}
        settings = ", ".join(
            f"{k}={format(v, '.3g') if isinstance(v, float) else v}" for k, v in kwargs.items()
        )
        batch = r.get("batch_size") or method.get("batch_size")
        if not data:
            batch = "exact" if not method.get("noisy_on_functions") else f"noise of {batch}"
        reached = f"{r['n_reached_target']}/{r['n_runs']}" if r["n_runs"] else "–"
        to_target = r["epochs_to_target" if data else "steps_to_target"]["mean"]
        mark = "" if r["lr_source"] in ("tuned", "default") else " *"
        if r.get("lr_found") is not None:
            mark = " †"  # the LR finder's suggestion, or the grid centred on it
        row = {
            "rank": "–" if r["rank"] is None else str(r["rank"]),
            "method": r["method"],
            "settings": settings or "defaults",
            "batch": str(batch),
            "lr": _g(r["lr"]) + mark,
            "val_loss": _mean_ci(r, "val_loss", ".3g"),
            "reached": reached,
            "to_target": _g(to_target, ".2f" if data else ".0f"),
            "steps": _g(info["steps"].get(r["method"]), "d"),
            "steps_per_s": _g(r["steps_per_s"]["mean"], ".0f"),
            "diverged": f"{r['n_diverged']}/{r['n_runs']}",
            "health": r.get("health") or "–",
            "tied_with": ", ".join(r.get("tied_with") or []) or "–",
        }
        if data:
            row["val_acc"] = _mean_ci(r, "val_acc", ".1f", 100)
            row["test_acc"] = _mean_ci(r, "test_acc", ".1f", 100)
            row["examples_per_s"] = _g(r.get("examples_per_s", {}).get("mean"), ".0f")
        out.append(row)
    return out


def fairness(document: dict[str, Any], task: str) -> str:
    """What was held equal on ``task``, and what that means for each method's step count."""
    info = document["tasks"][task]
    steps = info["steps"]
    per_method = ", ".join(f"{m} {s:,}" for m, s in steps.items())
    if info["kind"] == "function":
        return f"Held equal: optimizer steps ({max(steps.values()):,} per run)."
    if info.get("budget_steps"):
        return f"Held equal: optimizer steps ({info['budget_steps']:,} per run)."
    text = (
        f"Held equal: examples seen ({info['budget']:g} epoch(s) of the training set), so the "
        f"number of steps depends on the batch size: {per_method}."
    )
    starved = [m for m, s in steps.items() if s < 10]
    if starved:
        text += (
            f" {', '.join(starved)} make(s) fewer than 10 steps at this budget: full-batch "
            "gradient descent is judged on the same data, not the same number of updates; "
            "use --budget-steps N to compare at equal updates instead."
        )
    return text


def summary_frame(document: dict[str, Any]):
    """The summary as a pandas DataFrame: one row per (task, method), numbers not strings."""
    import pandas as pd

    records = []
    for r in document["summary"]:
        method = document["methods"].get(r["method"], {})
        record = {
            "task": r["task"],
            "rank": r["rank"],
            "method": r["method"],
            "optimizer": method.get("optimizer"),
            "settings": {**(method.get("kwargs") or {}), **(r.get("tuned_settings") or {})},
            "batch_size": r.get("batch_size") or method.get("batch_size"),
            "lr": r["lr"],
            "lr_source": r["lr_source"],
            "lr_found": r.get("lr_found"),
            "tied_with": list(r.get("tied_with") or []),
            "n_runs": r["n_runs"],
            "n_reached_target": r["n_reached_target"],
            "n_diverged": r["n_diverged"],
            "n_errors": r.get("n_errors", 0),
            "health": r.get("health"),
            "health_word": r.get("health_word"),
            "score": r.get("score", {}).get("mean"),
            "score_ci": r.get("score", {}).get("ci_half_width"),
        }
        for key in (
            "val_loss",
            "val_acc",
            "test_acc",
            "train_loss",
            "steps_to_target",
            "epochs_to_target",
            "steps_per_s",
            "examples_per_s",
        ):
            stats = r.get(key) or {}
            record[key] = stats.get("mean")
            record[f"{key}_std"] = stats.get("std")
        records.append(record)
    return pd.DataFrame.from_records(records)


def terminal_tables(document: dict[str, Any]) -> list[Any]:
    """One ``rich`` Table per task (rendered by the caller's Console, which wraps them)."""
    from rich import box
    from rich.table import Table

    out = []
    for task, info in document["tasks"].items():
        table = Table(
            title=f"{task}: {fairness(document, task)}",
            title_justify="left",
            box=box.SIMPLE_HEAD,
            pad_edge=False,
        )
        numeric = {"rank", "lr", "val_loss", "val_acc", "test_acc", "to_target", "steps"}
        numeric |= {"examples_per_s", "steps_per_s", "reached", "diverged"}
        shown = columns(info["kind"], compact=True)
        for key, header in shown:
            table.add_column(
                header,
                justify="right" if key in numeric else "left",
                overflow="ellipsis" if key == "health" else "fold",
                no_wrap=key not in ("tied_with", "health"),
                min_width={"rank": 4, "batch": 5, "tied_with": 9, "health": 9}.get(key),
                style="bold" if key == "method" else None,
            )
        for row in rows(document, task):
            # "dead ReLUs in 2/3 seeds" -> "dead ReLUs 2/3": the terminal is narrow
            row["health"] = re.sub(r" in (\d+/\d+) seeds", r" \1", row["health"])
            table.add_row(*(row[key] for key, _ in shown))
        out.append(table)
    return out
