"""The ``optimist`` command: ``compare``, ``tasks``, ``trajectories``, ``optimizers``, ``diagnose``.

``main(argv=None) -> int`` returns the exit status: 0 done, 1 some trials failed with an error,
2 bad arguments (one line on stderr, no traceback), 3 the machine or the study database failed
(disk full, permission denied, I/O error, a damaged database: one line; re-running resumes and
retries the trial that hit it), 130 interrupted (a partial report is written).
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Any

from optimist.cli_parser import _build_parser, _expand_study, _UsageError

__all__ = ["DEFAULT_STUDY", "main"]

DEFAULT_STUDY: dict[str, Any] = {
    "tasks": ["rosenbrock", "beale", "saddle", "ill-conditioned", "mnist-mlp"],
    "tune": True,
    "seeds": 3,
    "train_size": 10000,
    "budget_mnist": 2,
}
"""``optimist compare`` without ``--task``: the eight methods on the four 2-D functions and on
the 784-10-10 MLP trained for 2 epochs on the first 10,000 MNIST training images, learning rates
tuned (7-point grid, successive halving), 3 seeds."""


def _diagnose(args: argparse.Namespace) -> int:
    from optimist.monitor import diagnose, read_log, series_of
    from optimist.monitor.plots import plot_signals

    try:
        if args.plot and Path(args.plot).suffix.lower() not in (".png", ".svg"):
            raise ValueError(f"--plot must name a .png or .svg file, got {args.plot!r}")
        log = read_log(args.logfile)
        verdicts = diagnose(log)
        last = max((int(r["step"]) for r in log.records), default=0)
        print(
            f"{args.logfile}: {len(log.records)} records up to step {last} "
            f"({log.header.get('optimizer', '?')}, signal interval: "
            f"{log.header.get('every', '?')})"
        )
        if log.truncated:
            print(
                "note: the last line was cut off (the run was killed while writing); read up to it"
            )
        for v in verdicts:
            print(f"- {v}")
        if args.plot:
            print(plot_signals(series_of(log), args.plot, verdicts, title=str(args.logfile)))
    except (OSError, ValueError) as exc:
        print(f"optimist diagnose: error: {exc}", file=sys.stderr)
        return 2
    return 0


def _print_tasks() -> None:
    from optimist.comparison.tasks import TASKS

    width = max(map(len, TASKS))
    for name, task in TASKS.items():
        unit = task.budget_unit if task.default_budget != 1 else task.budget_unit[:-1]
        budget = f"{task.default_budget:g} {unit}"
        print(f"{name:<{width}}  {task.kind:<8}  {budget:<9}  {task.description}")


def _print_methods() -> None:
    from optimist.comparison.methods import METHODS

    width = max(map(len, METHODS))
    for name, m in METHODS.items():
        print(
            f"{name:<{width}} {m.optimizer:<{width}} batch={m.as_dict()['batch_size']!s:<4} "
            f"lr={m.default_lr:<7g} {m.description}"
        )


def _print_optimizers() -> None:
    import optimist

    for name, summary in optimist.optimizers().items():
        print(f"{name:<10} {summary}")


def _compare(args: argparse.Namespace, argv: list[str]) -> int:
    from optimist.comparison.api import ConfigError, RunError, run
    from optimist.comparison.methods import DEFAULT_METHODS
    from optimist.comparison.report import print_summary
    from optimist.comparison.runner import Config
    from optimist.comparison.safety import redact, scrub, secrets_of

    custom = args.model is not None or args.data is not None
    default_study = args.tasks is None and not custom
    tasks = list(DEFAULT_STUDY["tasks"]) if default_study else list(args.tasks or [])
    if custom:
        try:
            tasks.append(_user_task(args))
        except ConfigError as exc:
            print(f"optimist compare: error: {exc}", file=sys.stderr)
            return 2
    budget = args.budget
    budget_steps = args.budget_steps
    if args.budget_unit == "steps" and budget is not None:
        if budget_steps is not None:
            print(
                "optimist compare: error: give --budget with --budget-unit steps, or "
                "--budget-steps, not both",
                file=sys.stderr,
            )
            return 2
        if budget != int(budget) or budget < 1:
            print(
                f"optimist compare: error: with --budget-unit steps the budget must be a whole "
                f"number of steps >= 1, got {budget!r}",
                file=sys.stderr,
            )
            return 2
        budget, budget_steps = None, int(budget)
    workers = args.workers
    if workers is None:
        workers = max(1, min(2, os.cpu_count() or 1)) if default_study else 1
    train_size = args.train_size
    if default_study and train_size is None:
        train_size = DEFAULT_STUDY["train_size"]
    from optimist.comparison.methods import with_schedule

    config = Config(
        tasks=tasks,
        methods=[with_schedule(m, args.schedule) for m in args.methods or DEFAULT_METHODS],
        out=Path(args.out or "runs/compare"),
        budget=budget,
        budget_steps=budget_steps,
        seeds=args.seeds
        if args.seeds is not None
        else (DEFAULT_STUDY["seeds"] if default_study else 1),
        tune=bool(args.tune) if args.tune is not None else default_study,
        tune_params=tuple(args.tune) if args.tune else ("lr",),
        sampler=args.sampler,
        grid_size=args.grid_size,
        lr_span=args.lr_span,
        lr_range=args.lr_range,
        pruner=args.pruner,
        n_evals=args.evals,
        subsample=args.subsample,
        train_size=train_size,
        workers=workers,
        storage=args.storage,
        quiet=args.quiet,
        report=not args.no_report,
        command=redact("optimist " + " ".join(shlex.quote(a) for a in argv)),
        batch_size=args.batch_size,
        lr_find=args.lr_find,
    )
    if default_study and budget is None and budget_steps is None:
        config.tasks = _default_study_tasks(config)
    secrets = secrets_of(config.storage_url)
    start = time.perf_counter()
    try:
        result = run(config)
    except ConfigError as exc:
        print(f"optimist compare: error: {scrub(str(exc), secrets)}", file=sys.stderr)
        return 2
    except RunError as exc:
        print(f"optimist compare: error: {scrub(str(exc), secrets)}", file=sys.stderr)
        return 3
    except KeyboardInterrupt:  # before the study was open: nothing to write
        print("optimist compare: interrupted", file=sys.stderr)
        return 130
    elapsed = time.perf_counter() - start
    print_summary(result.results)
    print()
    out = Path(config.out)
    if result.report is not None:
        print(f"report: {result.report}")
    print(f"results: {out / 'results.json'}, {out / 'results.csv'}")
    print(f"wall time: {elapsed:.1f} s")
    if result.interrupted:
        print(
            "interrupted: partial results written; run the same command again to resume",
            file=sys.stderr,
        )
        return 130
    errors = sum(r["n_errors"] for r in result.results["summary"])
    if errors:
        print(f"{errors} trial(s) failed with an error; see results.json", file=sys.stderr)
        return 1
    return 0


def _load_callable(spec: str, what: str) -> Any:
    """``package.module:function`` (the module found from the current folder too)."""
    import importlib

    from optimist.comparison.api import ConfigError

    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigError(f"--{what} must be MODULE:FUNCTION, got {spec!r}")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # any import failure of user code: one line
        raise ConfigError(f"--{what}: cannot import {module_name!r}: {exc}") from None
    found = getattr(module, attr, None)
    if not callable(found):
        raise ConfigError(f"--{what}: {module_name!r} has no function {attr!r}")
    return found


def _user_task(args: argparse.Namespace) -> Any:
    """The task of ``--model`` and ``--data``."""
    from optimist.comparison.api import ConfigError
    from optimist.comparison.tasks import custom_task

    if args.model is None or args.data is None:
        raise ConfigError("give both --model MODULE:FUNCTION and --data MODULE:FUNCTION")
    model_fn = _load_callable(args.model, "model")
    load_data = _load_callable(args.data, "data")
    if args.loss not in ("cross_entropy", "mse"):
        raise ConfigError(f"--loss must be cross_entropy or mse, got {args.loss!r}")
    try:
        data = load_data()
        return custom_task(
            model_fn,
            data,
            name=args.name,
            description=f"model {args.model}, data {args.data}",
            loss=args.loss,
            budget=args.budget if args.budget is not None else 1,
        )
    except ConfigError:
        raise
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"--data {args.data}: {first}") from None


def _default_study_tasks(config: Any) -> list[Any]:
    """The default study's tasks, with its MNIST budget (2 epochs) set on the task itself."""
    import dataclasses

    from optimist.comparison.tasks import get_task

    tasks: list[Any] = []
    for name in config.tasks:
        task = get_task(name)
        if name == "mnist-mlp":
            task = dataclasses.replace(task, default_budget=DEFAULT_STUDY["budget_mnist"])
        tasks.append(task)
    return tasks


def _trajectories(args: argparse.Namespace) -> int:
    from optimist.comparison.api import ConfigError
    from optimist.comparison.functions import FUNCTIONS
    from optimist.comparison.methods import METHODS
    from optimist.comparison.trajectories import draw_trajectories

    if args.function not in FUNCTIONS:
        print(
            f"optimist trajectories: error: unknown function {args.function!r}; known: "
            f"{', '.join(FUNCTIONS)}",
            file=sys.stderr,
        )
        return 2
    unknown = [m for m in args.methods if m not in METHODS]
    if unknown:
        print(
            f"optimist trajectories: error: unknown method {unknown[0]!r}; known: "
            f"{', '.join(METHODS)}",
            file=sys.stderr,
        )
        return 2
    try:
        paths = draw_trajectories(
            args.function,
            args.methods,
            Path(args.out),
            steps=args.steps,
            lr=args.lr,
            seed=args.seed,
        )
    except ConfigError as exc:
        print(f"optimist trajectories: error: {exc}", file=sys.stderr)
        return 2
    for path in paths:
        print(path)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the ``optimist`` command line; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = _build_parser()
    try:
        argv = _expand_study(argv)
        args = parser.parse_args(argv)
    except _UsageError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    if args.command is None:
        parser.print_help()
        return 0
    if args.command == "tasks":
        _print_tasks()
        return 0
    if args.command == "optimizers":
        _print_optimizers()
        return 0
    if args.command == "methods":
        _print_methods()
        return 0
    if args.command == "trajectories":
        return _trajectories(args)
    if args.command == "diagnose":
        return _diagnose(args)
    return _compare(args, argv)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
