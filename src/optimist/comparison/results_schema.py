"""The ``results.json`` document of ``optimist compare``: its JSON Schema
(:data:`RESULTS_SCHEMA`) and :func:`validate`.

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

from typing import Any

__all__ = ["RESULTS_SCHEMA", "SCHEMA_VERSION", "validate"]

SCHEMA_VERSION = 1

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
