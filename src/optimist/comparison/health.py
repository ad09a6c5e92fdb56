"""The training monitor in a comparison: every evaluation run is watched, and the report says in
plain words whether each method trained well ("healthy", "diverging in 2/3 seeds", ...).

Each evaluation run (not the tuning trials) trains under :func:`optimist.monitor.watch` at a
fixed interval of ``total_steps // MONITOR_READINGS`` steps (a fixed interval, not
``every="auto"``, whose sampled steps follow the machine's speed: the same seed gives the same
report). Loss readings are the training loss at the evaluation points (data tasks, with the
validation loss for the *overfitting* verdict) or the mean gap of each interval (2-D
functions). A run's record keeps its verdicts and a thinned copy of the signals the diagnostic
figure draws: loss, gradient norm and the per-layer update-to-weight ratio.

On 2-D test functions there is no model: no layers, ReLUs or validation set. Only the verdicts
that need just the loss and the gradient norm apply there (:data:`LOSS_VERDICTS`: diverging,
stalled, oscillating); the others are left out.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import torch

from optimist.monitor import LABELS, LOSS_VERDICTS, VERDICTS, watch

__all__ = [
    "MONITOR_READINGS",
    "TrialMonitor",
    "first_evidence",
    "interval",
    "summarize_health",
]

MONITOR_READINGS = 50
"""Gradient-side readings per evaluation run."""
SERIES_POINTS = 60
"""The most points kept per signal in a run's record."""
PLOTTED = ("loss", "val_loss", "grad_norm", "update_ratio/")


def interval(total_steps: int) -> int:
    """Steps between two monitor readings of a run of ``total_steps`` steps."""
    return max(1, total_steps // MONITOR_READINGS)


def _thin(points: list[tuple[int, float]], limit: int = SERIES_POINTS) -> list[list[float]]:
    n = len(points)
    keep = (
        range(n) if n <= limit else sorted({round(i * (n - 1) / (limit - 1)) for i in range(limit)})
    )
    return [[points[i][0], points[i][1]] for i in keep]


class TrialMonitor:
    """A :class:`optimist.monitor.Watch` on one trial's optimizer (and model, on data tasks),
    with the fixed interval of :func:`interval` and no warnings; :meth:`result` is what the
    trial record keeps."""

    def __init__(
        self, model: torch.nn.Module | None, optimizer: torch.optim.Optimizer, total_steps: int
    ) -> None:
        self.function = model is None
        self.every = interval(total_steps)
        self.watch = watch(model, optimizer, every=self.every, warn=False)

    def loss(self, value: float, *, reading: bool = False) -> None:
        """A training loss (``reading``: it is already a mean over an interval: a reading now)."""
        self.watch.log_loss(value, reading=reading)

    def val_loss(self, value: float) -> None:
        self.watch.log_val_loss(value)

    def result(self) -> dict[str, Any]:
        """``{"every", "health", "verdicts", "series"}``; removes the hooks."""
        self.watch.close()
        verdicts = [v for v in self.watch.verdicts() if v.name != "healthy"]
        if self.function:
            verdicts = [v for v in verdicts if v.name in LOSS_VERDICTS]
        names = list(dict.fromkeys(v.name for v in verdicts))
        word = "diverged" if "diverging" in names else ("warning" if names else "healthy")
        series = {
            key: _thin(points)
            for key, points in sorted(self.watch.series.items())
            if any(key == p or (p.endswith("/") and key.startswith(p)) for p in PLOTTED)
            and not (self.function and key.startswith("update_ratio/"))
        }
        return {
            "every": self.every,
            "health": word,
            "verdicts": [v.to_dict() for v in verdicts],
            "series": series,
        }


def summarize_health(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The health of a (task, method) over its evaluation runs: ``text`` for the report column
    ("healthy", "stalled in 2/3 seeds; dead ReLUs in 3/3 seeds", "not monitored"), ``word``
    (the worst run's: healthy < warning < diverged), ``counts`` (runs per verdict) and
    ``n_monitored``."""
    monitored = [r["monitor"] for r in runs if isinstance(r.get("monitor"), dict)]
    n = len(monitored)
    if not n:
        return {"text": "not monitored", "word": None, "counts": {}, "n_monitored": 0}
    counts = Counter(name for m in monitored for name in {v["name"] for v in m["verdicts"]})
    ordered = {name: counts[name] for name in VERDICTS if counts.get(name)}
    if not ordered:
        text = "healthy"
    else:
        text = "; ".join(
            LABELS[name] if n == 1 else f"{LABELS[name]} in {k}/{n} seeds"
            for name, k in ordered.items()
        )
    word = "diverged" if "diverging" in ordered else ("warning" if ordered else "healthy")
    return {"text": text, "word": word, "counts": ordered, "n_monitored": n}


def first_evidence(runs: list[dict[str, Any]]) -> list[str]:
    """One line per verdict of a method's runs: the first seed's evidence and the advice."""
    seen: dict[str, str] = {}
    for r in sorted(runs, key=lambda r: str(r["seed"])):
        for v in (r.get("monitor") or {}).get("verdicts", []):
            if v["name"] not in seen:
                where = f" in layer {v['layer']}" if v.get("layer") else ""
                step = v["step"] if isinstance(v["step"], int) else "?"
                seen[v["name"]] = (
                    f"{LABELS[v['name']]}{where} (seed {r['seed']}, step {step}): "
                    f"{v['evidence']}. Try: {v['advice']}."
                )
    return [seen[name] for name in VERDICTS if name in seen]
