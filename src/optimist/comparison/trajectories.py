"""``optimist trajectories``: paths of a few methods over one 2-D test function, without a study.

Writes ``paths.png`` (paths over the contour plot), ``paths.gif`` (the same, animated) and
``trajectories.json`` (each method's learning rate, final gap and path) to the output folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from optimist.comparison.methods import get_method
from optimist.comparison.results import atomic_write_bytes, write_json
from optimist.comparison.tasks import FunctionTask, get_task
from optimist.comparison.training_loop import run_trial

__all__ = ["draw_trajectories"]


def draw_trajectories(
    function: str,
    methods: list[str],
    out: Path,
    *,
    steps: int | None = None,
    lr: float | None = None,
    seed: int = 0,
) -> list[Path]:
    """Run ``methods`` on ``function`` and draw their paths; returns the files written."""
    from optimist.comparison import plots
    from optimist.comparison.api import ConfigError

    task = get_task(function)
    if not isinstance(task, FunctionTask):
        raise ConfigError(f"{function!r} is not a 2-D test function")
    if steps is not None and steps <= 0:
        raise ConfigError(f"steps must be positive, got {steps}")
    if lr is not None and not lr > 0:
        raise ConfigError(f"lr must be positive, got {lr}")
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot write to --out {str(out)!r}: {exc.strerror}") from None
    total = steps or int(task.default_budget)
    runs: list[dict[str, Any]] = []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for name in methods:
            method = get_method(name)
            rate = lr if lr is not None else task.default_lr(method)
            result = run_trial(task, method, rate, seed, total)
            runs.append(
                {
                    "task": function,
                    "method": name,
                    "lr": rate,
                    "seed": seed,
                    "state": result["state"],
                    "final": result["final"],
                    "trajectory": result["trajectory"],
                }
            )
    finally:
        torch.set_num_threads(threads)
    document = {
        "tasks": {function: {"kind": "function"}},
        "methods": {name: {} for name in methods},
        "runs": runs,
    }
    written = []
    png = plots.paths_plot(document, function, fmt="png")
    gif = plots.trajectory_gif(document, function)
    for name, data in (("paths.png", png), ("paths.gif", gif)):
        if data:
            atomic_write_bytes(out / name, data)
            written.append(out / name)
    write_json(out / "trajectories.json", {"function": function, "steps": total, "runs": runs})
    written.append(out / "trajectories.json")
    return written
