"""``results.json`` (building it from the studies), ``results.csv``, and atomic file writes (a
temporary file in the same folder, then ``os.replace``). The document's shape, its schema and
its validation: :mod:`optimist.comparison.results_schema` (re-exported here).
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
import statistics
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from optimist.comparison.health import summarize_health
from optimist.comparison.results_schema import RESULTS_SCHEMA, SCHEMA_VERSION, validate
from optimist.comparison.safety import inside, safe_name

__all__ = [
    "CSV_COLUMNS",
    "RESULTS_SCHEMA",
    "SCHEMA_VERSION",
    "atomic_write_bytes",
    "atomic_write_text",
    "compact",
    "finite",
    "summarize",
    "validate",
    "write_csv",
    "write_json",
    "write_trial_file",
]

TUNE_CURVE_POINTS = 60

# --- small helpers --------------------------------------------------------------------------


def finite(value: Any) -> Any:
    """``value`` with every non-finite float (recursively) replaced by None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old or the new file, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    """:func:`atomic_write_bytes` of ``text`` in UTF-8."""
    atomic_write_bytes(path, text.encode("utf-8"))


def write_json(path: Path, document: Any) -> None:
    atomic_write_text(path, json.dumps(finite(document), indent=1, allow_nan=False) + "\n")


def write_trial_file(out: Path, record: dict[str, Any]) -> Path:
    """``OUT/trials/<task>/<method>/<phase>-lr<lr>-seed<seed>-<study sig>.json``, atomically."""
    sig = safe_name(str(record["study"]).rsplit("/", 1)[-1])
    lr = safe_name(f"{record['lr']:.6g}".replace(".", "p").replace("+", ""))
    name = f"{record['phase']}-lr{lr}-seed{safe_name(str(record['seed']))}-{sig}.json"
    folder = Path(out) / "trials" / safe_name(record["task"]) / safe_name(record["method"])
    path = inside(out, folder / name)
    write_json(path, record)
    return path


def _thin(curves: dict[str, Any], limit: int) -> dict[str, Any]:
    n = len(curves["step"])
    if n <= limit:
        return curves
    keep = sorted({round(i * (n - 1) / (limit - 1)) for i in range(limit)})
    return {k: (None if v is None else [v[i] for i in keep]) for k, v in curves.items()}


def compact(result: dict[str, Any], phase: str) -> dict[str, Any]:
    """What is stored for a trial: non-finite numbers as None; tuning trials thinned, no path."""
    out = dict(result)
    if phase == "tune":
        out["curves"] = _thin(result["curves"], TUNE_CURVE_POINTS)
        out["trajectory"] = None
    objective = out.pop("objective")
    out = finite(out)
    out["objective"] = objective if math.isfinite(objective) else None
    return out


# --- summary --------------------------------------------------------------------------------


def _stats(values: Iterable[Any]) -> dict[str, Any]:
    vals = [v for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
    if not vals:
        return {"mean": None, "std": None, "min": None, "max": None, "n": 0}
    return {
        "mean": statistics.fmean(vals),
        "std": statistics.pstdev(vals) if len(vals) > 1 else 0.0,
        "min": min(vals),
        "max": max(vals),
        "n": len(vals),
    }


def summarize(
    task: str,
    kind: str,
    method: str,
    lr: float | None,
    lr_source: str,
    runs: list[dict[str, Any]],
    tuning: list[dict[str, Any]],
) -> dict[str, Any]:
    """One summary row from a (task, method)'s evaluation runs and tuning trials."""
    ok = [r for r in runs if r["state"] == "complete"]
    finals = [r["final"] for r in ok]
    reached = [f["steps_to_target"] for f in finals if f.get("steps_to_target") is not None]
    tuned = [t for t in tuning if t["state"] in ("complete", "diverged", "pruned")]
    health = summarize_health(runs)
    return {
        "task": task,
        "kind": kind,
        "method": method,
        "rank": None,
        "lr": lr,
        "lr_source": lr_source,
        "n_runs": len(runs),
        "n_diverged": sum(r["state"] == "diverged" for r in runs),
        "n_errors": sum(r["state"] == "error" for r in runs),
        "batch_size": next((f["batch_size"] for f in finals if f.get("batch_size")), None),
        "train_loss": _stats(f["train_loss"] for f in finals),
        "val_loss": _stats(f["val_loss"] for f in finals),
        "val_acc": _stats(f.get("val_acc") for f in finals),
        "test_acc": _stats(f.get("test_acc") for f in finals),
        "best_val_loss": _stats(f.get("best_val_loss") for f in finals),
        "steps_to_target": _stats(reached),
        "n_reached_target": len(reached),
        "epochs_to_target": _stats(f.get("epochs_to_target") for f in finals),
        "time_to_target_s": _stats(f.get("time_to_target_s") for f in finals),
        "steps_per_s": _stats(f.get("steps_per_s") for f in finals),
        "examples_per_s": _stats(f.get("examples_per_s") for f in finals),
        "time_s": _stats(f.get("time_s") for f in finals),
        "health": health["text"],
        "health_word": health["word"],
        "health_counts": health["counts"],
        "tuning": {
            "n_trials": len(tuned),
            "n_pruned": sum(t["state"] == "pruned" for t in tuned),
            "n_diverged": sum(t["state"] == "diverged" for t in tuned),
            "lr_min": min((t["lr"] for t in tuned), default=None),
            "lr_max": max((t["lr"] for t in tuned), default=None),
        },
    }


def rank(
    rows: list[dict[str, Any]], runs: list[dict[str, Any]], tasks: dict[str, Any]
) -> list[dict[str, Any]]:
    """Rows sorted per task (tasks in first-seen order) with ``rank``, ``score``, ``tied_with``,
    ``beaten_by``, ``vs_best`` and ``vs_next`` filled in by :mod:`ranking`'s rule."""
    from optimist.comparison.ranking import rank_task

    order: list[str] = []
    for r in rows:
        if r["task"] not in order:
            order.append(r["task"])
    out = []
    for task in order:
        info = tasks[task]
        mine = [r for r in rows if r["task"] == task]
        out.extend(
            rank_task(mine, [r for r in runs if r["task"] == task], info["kind"], info["target"])
        )
    return out


# --- CSV ------------------------------------------------------------------------------------

CSV_COLUMNS = [
    "task",
    "method",
    "rank",
    "lr",
    "lr_source",
    "n_runs",
    "n_diverged",
    "train_loss_mean",
    "train_loss_std",
    "val_loss_mean",
    "val_loss_std",
    "val_acc_mean",
    "val_acc_std",
    "test_acc_mean",
    "steps_to_target_mean",
    "n_reached_target",
    "tied_with",
    "epochs_to_target_mean",
    "time_to_target_s_mean",
    "steps_per_s_mean",
    "examples_per_s_mean",
    "time_s_mean",
    "tuning_trials",
    "tuning_pruned",
    "tuning_diverged",
    "health",
]


def write_csv(path: Path, summary: list[dict[str, Any]]) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for r in summary:
        row = []
        for col in CSV_COLUMNS:
            if col.startswith("tuning_"):
                value = r["tuning"][
                    {
                        "tuning_trials": "n_trials",
                        "tuning_pruned": "n_pruned",
                        "tuning_diverged": "n_diverged",
                    }[col]
                ]
            elif col == "tied_with":
                value = " ".join(r.get("tied_with") or [])
            elif col.endswith(("_mean", "_std")):
                name, stat = col.rsplit("_", 1)
                value = r[name][stat]
            else:
                value = r[col]
            row.append(
                "" if value is None else (f"{value:.6g}" if isinstance(value, float) else value)
            )
        writer.writerow(row)
    atomic_write_text(path, buffer.getvalue())
