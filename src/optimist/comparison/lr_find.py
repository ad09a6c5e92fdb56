"""``optimist compare --lr-find``: the learning-rate range test (:func:`optimist.lr_finder`) per
method on each data task, run once by the coordinating process before any trial.

Its suggestion, rounded to a tenth of a decade (so that the same data and seed give the same
number on any machine and thread count), takes the place of the method's documented default
learning rate: the centre of the tuning grid with ``--tune``, the learning rate of the runs
without. The sweep is seeded from the task's name (initial weights and data order), like the
trials, and is kept in ``OUT/lr_finder.json``: a resumed comparison reuses it and so finds the
same studies. 2-D test functions have no data to sweep: they keep their documented defaults.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import torch

from optimist.comparison.methods import Method
from optimist.comparison.results import atomic_write_text
from optimist.comparison.tasks import DataTask, Task
from optimist.comparison.training_loop import derive_seed

__all__ = ["FINDER_STEPS", "find_lrs", "snap"]

FINDER_STEPS = 100
START_LR, END_LR = 1e-7, 10.0
FILE = "lr_finder.json"


def snap(lr: float) -> float:
    """``lr`` rounded to a tenth of a decade (3 significant digits)."""
    return float(f"{10 ** (round(math.log10(lr) * 10) / 10):.3g}")


def _loss(task: DataTask) -> Any:
    if task.loss in ("cross_entropy", "mse"):
        return task.loss
    if callable(task.loss):
        return task.loss  # loss(output, target), the order lr_finder uses
    raise ValueError(f"unknown loss {task.loss!r}; use 'cross_entropy', 'mse' or a callable")


def find_lr(task: DataTask, method: Method, subsample: int | None) -> dict[str, Any]:
    """One range test: ``{"suggestion", "lr", "default_lr", "stopped", "steps"}`` (``lr`` is the
    one used: the rounded suggestion, or the default when the loss never fell)."""
    from optimist.monitor import lr_finder

    data = task.data(subsample)
    x, y = data.x_train, data.y_train
    if getattr(method, "schedule", None) is not None:
        # the sweep sets the LR itself: it finds the peak LR that the schedule then scales
        method = dataclasses.replace(method, schedule=None)
    torch.manual_seed(derive_seed(task.name, "lr-find", "init"))
    model = task.model_fn()
    optimizer = method.build(list(model.parameters()), START_LR)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the trials run
    try:
        result = lr_finder(
            model,
            (x, y),
            optimizer=optimizer,
            loss=_loss(task),
            start_lr=START_LR,
            end_lr=END_LR,
            steps=FINDER_STEPS,
            batch_size=method.batch_size(len(y)),
            seed=derive_seed(task.name, "lr-find", "order") % (2**31),
        )
    finally:
        torch.set_num_threads(threads)
    default = task.default_lr(method)
    suggestion = snap(result.suggestion) if result.suggestion else None
    return {
        "suggestion": suggestion,
        "lr": suggestion if suggestion is not None else default,
        "default_lr": default,
        "stopped": result.stopped,
        "steps": len(result.lrs),
    }


def find_lrs(
    tasks: list[Task], methods: list[Method], subsample: int | None, out: Path
) -> dict[str, dict[str, Any]]:
    """``{"task/method": find_lr(...)}`` for every data task and method, reusing the ones in
    ``OUT/lr_finder.json`` whose task and method are unchanged; writes the file atomically."""
    from optimist.comparison.study import signature

    path = Path(out) / FILE
    try:
        cached = json.loads(path.read_text())
    except (OSError, ValueError):
        cached = {}
    found: dict[str, dict[str, Any]] = {}
    for task in tasks:
        if not isinstance(task, DataTask):
            continue
        for method in methods:
            label = f"{task.name}/{method.name}"
            sig = signature(
                {
                    "task": task.signature(subsample),
                    "method": [
                        method.optimizer,
                        method.kwargs,
                        method.batch,
                        method.mini_batch,
                        getattr(method, "schedule", None),
                    ],
                    "finder": [FINDER_STEPS, START_LR, END_LR],
                }
            )
            entry = cached.get(label) if isinstance(cached, dict) else None
            if not (isinstance(entry, dict) and entry.get("signature") == sig):
                entry = {**find_lr(task, method, subsample), "signature": sig}
            found[label] = entry
    if found:
        atomic_write_text(path, json.dumps(found, indent=1, sort_keys=True) + "\n")
    return found
