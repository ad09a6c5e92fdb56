"""Fair, side-by-side optimizer comparisons: ``optimist compare`` and :func:`compare`.

Layers: ``safety`` (secrets, file names, environment errors), ``interrupts`` (Ctrl-C held back
during storage writes, raised once) and ``functions``/``methods``/``tasks`` (what is compared)
<- ``training_loop`` (one trial; data tasks through ``optimist.training``'s ``fit``) <-
``study``/``runner``/``workers`` (Optuna studies, claiming, parallel processes) <-
``results``/``results_schema``/``ranking`` (files, schema, the ranking rule) <-
``recommend``/``tables``/``plots``/``report`` (verdicts, tables, figures, the page) <- ``api``
(the coordinator).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from optimist.comparison.api import CompareResult, ConfigError
from optimist.comparison.functions import FUNCTIONS, TestFunction
from optimist.comparison.methods import DEFAULT_METHODS, METHODS, Method, with_schedule
from optimist.comparison.results_schema import RESULTS_SCHEMA, SCHEMA_VERSION, validate
from optimist.comparison.runner import Config
from optimist.comparison.tasks import TASKS, DataTask, FunctionTask, Task, custom_task

__all__ = [
    "DEFAULT_METHODS",
    "FUNCTIONS",
    "METHODS",
    "RESULTS_SCHEMA",
    "SCHEMA_VERSION",
    "TASKS",
    "CompareResult",
    "Config",
    "ConfigError",
    "DataTask",
    "FunctionTask",
    "Method",
    "Task",
    "TestFunction",
    "compare",
    "custom_task",
    "validate",
]


def compare(
    model_fn: Callable[[], Any] | None = None,
    data: Any = None,
    *,
    optimizers: Sequence[str] | None = None,
    schedule: str | None = None,
    tasks: Sequence[str | Task] | None = None,
    name: str = "custom",
    loss: str | Callable[[Any, Any], Any] = "cross_entropy",
    budget: float | None = None,
    budget_steps: int | None = None,
    seeds: int = 1,
    tune: bool | Sequence[str] = False,
    sampler: str = "grid",
    grid_size: int = 7,
    lr_span: float = 1.5,
    lr_range: tuple[float, float] | None = None,
    pruner: str = "sha",
    n_evals: int = 40,
    workers: int = 1,
    out: str | Path = "runs/compare",
    storage: str | None = None,
    subsample: int | None = None,
    train_size: int | None = None,
    batch_size: int | None = None,
    quiet: bool = True,
    report: bool = True,
    lr_find: bool = False,
) -> CompareResult:
    """Compare optimizers on your own model and data, or on built-in tasks.

    Args:
        model_fn: builds a fresh ``torch.nn.Module`` (called once per trial, after seeding);
            with ``data``, defines a task called ``name``. Must be picklable (a module-level
            function) when ``workers > 1``.
        data: ``(x_train, y_train, x_val, y_val[, x_test, y_test])`` arrays or tensors, or
            ``((x_train, y_train), (x_val, y_val))``.
        optimizers: method names from :data:`METHODS` (default: the eight in
            :data:`DEFAULT_METHODS`), optionally with settings: ``"adam[weight_decay=1e-4,
            batch=64]"``, ``"adamw[schedule=warmup_cosine]"``; every optimizer of
            :func:`optimist.optim.optimizers` is a method (``"lion"``, ``"muon"``, ...).
        schedule: a learning-rate schedule (``"warmup_cosine"``, ``"wsd"``, ...) for every
            method that names none; it spans each run's steps.
        tasks: built-in task names (see :data:`TASKS`) or Task objects, compared as well.
        loss: ``"cross_entropy"`` (classification, accuracy reported), ``"mse"`` or a callable
            ``loss(output, target)``.
        budget: epochs on data tasks, steps on 2-D functions (default: each task's own);
            ``budget_steps`` counts optimizer steps on every task instead.
        seeds: evaluation runs per method (mean ± std are reported).
        tune: tune each method's learning rate with the same Optuna budget first (a list such
            as ``["lr", "momentum", "weight_decay"]`` also tunes those settings where the
            optimizer has them, with TPE):
            ``grid_size`` trials, log-spaced ``lr_span`` decades either side of the method's
            default (or over ``lr_range`` for every method), ``sampler`` ``"grid"`` or
            ``"tpe"``, ``pruner`` ``"sha"``, ``"hyperband"`` or ``"none"``.
        workers: processes running trials in parallel (same numbers for any count).
        out: output folder (``report.html``, ``results.json``, ``results.csv``, ``study.db``,
            ``trials/``, ``plots/``).
        batch_size: examples per step of every mini-batch method (default 32).
        storage: Optuna storage URL (default ``sqlite:///OUT/study.db``); a server database
            (``postgresql://...``) lets several machines work on one comparison.
        lr_find: first run :func:`optimist.lr_finder` per method on each data task and use its
            suggestion instead of the documented default LR: the centre of the tuning grid, or
            the LR of the runs without tuning (2-D functions keep their defaults).

    Returns:
        a :class:`CompareResult` with the ``results.json`` document, ``ranking(task)`` and
        ``table()``. Raises :class:`ConfigError` for bad settings.

    Example:
        >>> result = optimist.compare(make_model, (x, y, x_val, y_val),
        ...                           optimizers=["sgd", "adam"], budget=2, tune=True)
        >>> result.ranking("custom")
    """
    from optimist.comparison.api import run

    chosen: list[Any] = list(tasks or [])
    if model_fn is not None or data is not None:
        if model_fn is None or data is None:
            raise ConfigError("give both model_fn and data (or neither, with tasks=[...])")
        chosen.append(
            custom_task(
                model_fn, data, name=name, loss=loss, budget=budget if budget is not None else 1
            )
        )
    config = Config(
        tasks=chosen,
        methods=[with_schedule(m, schedule) for m in optimizers or DEFAULT_METHODS],
        out=Path(out),
        budget=budget,
        budget_steps=budget_steps,
        seeds=seeds,
        tune=bool(tune),
        tune_params=tuple(tune) if isinstance(tune, (list, tuple)) and tune else ("lr",),
        sampler=sampler,
        grid_size=grid_size,
        lr_span=lr_span,
        lr_range=tuple(lr_range) if lr_range is not None else None,
        pruner=pruner,
        n_evals=n_evals,
        subsample=subsample,
        train_size=train_size,
        batch_size=batch_size,
        workers=workers,
        storage=storage,
        quiet=quiet,
        report=report,
        lr_find=lr_find,
    )
    return run(config)
