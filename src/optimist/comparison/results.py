"""``results.json`` (schema, validation, building it from the studies), ``results.csv``, and
atomic file writes (a temporary file in the same folder, then ``os.replace``).

The document (``schema_version`` 1)::

    {
      "schema_version": 1,
      "generator": "optimist 0.1.0",
      "created": "2025-01-01T12:00:00Z",
      "status": "complete" | "partial",         # partial: interrupted, or others still running
      "command": "optimist compare ..." | null,
      "wall_time_s": 123.4,
      "protocol": {...},                          # what was tuned and how (see README.md)
      "tasks":   {"<task>": {"kind", "description", "budget_unit", "target", "steps", ...}},
      "methods": {"<method>": {"optimizer", "kwargs", "batch", "default_lr", ...}},
      "runs":    [run, ...],                      # evaluation runs, one per (task, method, seed)
      "tuning":  [run, ...],                      # tuning trials (no trajectory)
      "summary": [row, ...],                      # one per (task, method), ranked per task
      "recommendations": {"<task>": "plain words"},
      "lr_finder": {"<task>/<method>": {...}}   # only with --lr-find
    }

A ``run`` has ``task, method, phase, lr, seed, state`` (``complete | pruned | diverged | error``),
``objective``, ``curves`` (``step, epoch, time_s, train_loss, val_loss, val_acc``: lists of the
same length; ``epoch``/``val_acc`` null on 2-D functions), ``final`` (the metrics at the end),
``trajectory`` (``[[x, y], ...]`` on 2-D functions, else null), ``study`` and ``trial_number``;
evaluation runs also have ``monitor`` (the training monitor's ``every``, ``health``,
``verdicts`` and thinned ``series``, see :mod:`optimist.comparison.health`). A summary row has
``health`` (the text of the report's column), ``health_word`` and ``health_counts``.
Non-finite numbers are written as ``null``. :data:`RESULTS_SCHEMA` is the JSON Schema.
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

SCHEMA_VERSION = 1
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


# --- schema ---------------------------------------------------------------------------------

_NUM = {"type": ["number", "null"]}
_INT = {"type": ["integer", "null"]}
_STATS = {
    "type": "object",
    "required": ["mean", "std", "min", "max", "n"],
    "properties": {"mean": _NUM, "std": _NUM, "min": _NUM, "max": _NUM, "n": {"type": "integer"}},
}
_SERIES = {"type": ["array", "null"], "items": _NUM}
_VERDICT = {
    "type": "object",
    "required": ["name", "step", "evidence", "advice"],
    "properties": {
        "name": {"type": "string"},
        "step": {"type": "integer"},
        "evidence": {"type": "string"},
        "advice": {"type": "string"},
        "layer": {"type": ["string", "null"]},
    },
}
_MONITOR = {
    "type": ["object", "null"],
    "required": ["every", "health", "verdicts", "series"],
    "properties": {
        "every": {"type": "integer"},
        "health": {"enum": ["healthy", "warning", "diverged"]},
        "verdicts": {"type": "array", "items": _VERDICT},
        "series": {
            "type": "object",
            "additionalProperties": {
                "type": "array",
                "items": {"type": "array", "items": _NUM, "minItems": 2, "maxItems": 2},
            },
        },
    },
}
_RUN = {
    "type": "object",
    "required": [
        "task",
        "method",
        "phase",
        "lr",
        "seed",
        "state",
        "objective",
        "curves",
        "final",
        "trajectory",
        "study",
        "trial_number",
    ],
    "properties": {
        "task": {"type": "string"},
        "method": {"type": "string"},
        "phase": {"enum": ["tune", "final"]},
        "lr": {"type": "number"},
        "seed": {"type": ["integer", "string"]},
        "state": {"enum": ["complete", "pruned", "diverged", "error"]},
        "objective": _NUM,
        "curves": {
            "type": ["object", "null"],
            "required": ["step", "epoch", "time_s", "train_loss", "val_loss", "val_acc"],
            "properties": {
                "step": {"type": "array", "items": {"type": "integer"}},
                "epoch": _SERIES,
                "time_s": _SERIES,
                "train_loss": _SERIES,
                "val_loss": _SERIES,
                "val_acc": _SERIES,
            },
        },
        "final": {
            "type": ["object", "null"],
            "required": [
                "train_loss",
                "val_loss",
                "val_acc",
                "test_loss",
                "test_acc",
                "steps",
                "time_s",
                "steps_per_s",
                "steps_to_target",
                "time_to_target_s",
            ],
            "properties": {
                "train_loss": _NUM,
                "val_loss": _NUM,
                "val_acc": _NUM,
                "test_loss": _NUM,
                "test_acc": _NUM,
                "steps": {"type": "integer"},
                "time_s": _NUM,
                "steps_per_s": _NUM,
                "steps_to_target": _INT,
                "time_to_target_s": _NUM,
            },
        },
        "trajectory": {
            "type": ["array", "null"],
            "items": {"type": "array", "items": {"type": "number"}, "minItems": 2, "maxItems": 2},
        },
        "study": {"type": "string"},
        "trial_number": {"type": "integer"},
        "error": {"type": "string"},
        "reports": {"type": "object", "additionalProperties": _NUM},
        "monitor": _MONITOR,
    },
}
_SUMMARY = {
    "type": "object",
    "required": [
        "task",
        "kind",
        "method",
        "rank",
        "lr",
        "lr_source",
        "n_runs",
        "n_diverged",
        "train_loss",
        "val_loss",
        "val_acc",
        "test_acc",
        "steps_to_target",
        "n_reached_target",
        "time_to_target_s",
        "steps_per_s",
        "examples_per_s",
        "score",
        "tied_with",
        "tuning",
    ],
    "properties": {
        "task": {"type": "string"},
        "kind": {"enum": ["function", "data"]},
        "method": {"type": "string"},
        "rank": _INT,
        "lr": _NUM,
        "lr_source": {"type": "string"},
        "n_runs": {"type": "integer"},
        "n_diverged": {"type": "integer"},
        "train_loss": _STATS,
        "val_loss": _STATS,
        "val_acc": _STATS,
        "test_acc": _STATS,
        "steps_to_target": _STATS,
        "n_reached_target": {"type": "integer"},
        "time_to_target_s": _STATS,
        "steps_per_s": _STATS,
        "examples_per_s": _STATS,
        "batch_size": _INT,
        "lr_found": _NUM,
        "health": {"type": "string"},
        "health_word": {"enum": ["healthy", "warning", "diverged", None]},
        "health_counts": {"type": "object", "additionalProperties": {"type": "integer"}},
        "score": {
            "type": "object",
            "required": ["mean", "ci_half_width", "n"],
            "properties": {"mean": _NUM, "ci_half_width": _NUM, "n": {"type": "integer"}},
        },
        "tied_with": {"type": "array", "items": {"type": "string"}},
        "beaten_by": {"type": "array", "items": {"type": "string"}},
        "tuning": {
            "type": "object",
            "required": ["n_trials", "n_pruned", "n_diverged"],
            "properties": {
                "n_trials": {"type": "integer"},
                "n_pruned": {"type": "integer"},
                "n_diverged": {"type": "integer"},
            },
        },
    },
}
RESULTS_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "optimist compare results",
    "type": "object",
    "required": [
        "schema_version",
        "generator",
        "created",
        "status",
        "command",
        "wall_time_s",
        "protocol",
        "tasks",
        "methods",
        "runs",
        "tuning",
        "summary",
        "recommendations",
    ],
    "properties": {
        "schema_version": {"const": SCHEMA_VERSION},
        "generator": {"type": "string"},
        "created": {"type": "string"},
        "status": {"enum": ["complete", "partial"]},
        "command": {"type": ["string", "null"]},
        "wall_time_s": _NUM,
        "protocol": {
            "type": "object",
            "required": [
                "tuned",
                "sampler",
                "grid_size",
                "pruner",
                "seeds",
                "n_evals",
                "budget",
                "selection",
                "storage",
            ],
        },
        "tasks": {
            "type": "object",
            "additionalProperties": {
                "type": "object",
                "required": ["kind", "description", "budget_unit", "target", "steps"],
                "properties": {
                    "kind": {"enum": ["function", "data"]},
                    "steps": {"type": "object", "additionalProperties": {"type": "integer"}},
                },
            },
        },
        "methods": {
            "type": "object",
            "additionalProperties": {
                "type": "object",
                "required": ["optimizer", "kwargs", "batch", "default_lr", "description"],
            },
        },
        "runs": {"type": "array", "items": _RUN},
        "tuning": {"type": "array", "items": _RUN},
        "summary": {"type": "array", "items": _SUMMARY},
        "recommendations": {"type": "object", "additionalProperties": {"type": "string"}},
        "lr_finder": {
            "type": "object",
            "additionalProperties": {
                "type": "object",
                "required": ["suggestion", "lr", "default_lr", "stopped", "steps"],
                "properties": {
                    "suggestion": _NUM,
                    "lr": {"type": "number"},
                    "default_lr": {"type": "number"},
                    "stopped": {"type": "string"},
                    "steps": {"type": "integer"},
                },
            },
        },
        "verdicts": {
            "type": "object",
            "required": ["overall", "tasks"],
            "properties": {
                "overall": {"type": "string"},
                "tasks": {
                    "type": "object",
                    "additionalProperties": {
                        "type": "object",
                        "required": ["winners", "text", "lr", "batch_size", "second"],
                    },
                },
            },
        },
    },
}

_TYPES = {
    "object": dict,
    "array": list,
    "string": str,
    "boolean": bool,
    "null": type(None),
}


def _type_ok(value: Any, name: str) -> bool:
    if name == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if name == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, _TYPES[name])


def _check(value: Any, schema: dict[str, Any], path: str, errors: list[str]) -> None:
    if "const" in schema and value != schema["const"]:
        errors.append(f"{path}: expected {schema['const']!r}, got {value!r}")
    if "enum" in schema and value not in schema["enum"]:
        errors.append(f"{path}: {value!r} is not one of {schema['enum']}")
    if "type" in schema:
        names = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        if not any(_type_ok(value, n) for n in names):
            errors.append(f"{path}: expected {'/'.join(names)}, got {type(value).__name__}")
            return
    if isinstance(value, dict):
        for name in schema.get("required", []):
            if name not in value:
                errors.append(f"{path}: missing {name!r}")
        props = schema.get("properties", {})
        for name, item in value.items():
            if name in props:
                _check(item, props[name], f"{path}.{name}", errors)
            elif isinstance(schema.get("additionalProperties"), dict):
                _check(item, schema["additionalProperties"], f"{path}.{name}", errors)
    if isinstance(value, list):
        if "minItems" in schema and len(value) < schema["minItems"]:
            errors.append(f"{path}: fewer than {schema['minItems']} items")
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            errors.append(f"{path}: more than {schema['maxItems']} items")
        if "items" in schema:
            for i, item in enumerate(value):
                _check(item, schema["items"], f"{path}[{i}]", errors)


def validate(document: Any) -> None:
    """Raise ``ValueError`` listing every way ``document`` breaks :data:`RESULTS_SCHEMA`
    (a self-contained checker of the keywords the schema uses), plus the cross-field rules:
    each run's curves are lists of one length, and summary rows name known tasks/methods."""
    errors: list[str] = []
    _check(document, RESULTS_SCHEMA, "$", errors)
    if not errors:
        for group in ("runs", "tuning"):
            for i, run in enumerate(document[group]):
                curves = run["curves"]
                if curves is None:
                    continue
                n = len(curves["step"])
                for name, series in curves.items():
                    if series is not None and len(series) != n:
                        errors.append(f"$.{group}[{i}].curves.{name}: length {len(series)} != {n}")
        for i, row in enumerate(document["summary"]):
            if row["task"] not in document["tasks"]:
                errors.append(f"$.summary[{i}].task: unknown task {row['task']!r}")
            if row["method"] not in document["methods"]:
                errors.append(f"$.summary[{i}].method: unknown method {row['method']!r}")
    if errors:
        shown = "; ".join(errors[:10])
        more = f" (and {len(errors) - 10} more)" if len(errors) > 10 else ""
        raise ValueError(f"results document is invalid: {shown}{more}")
