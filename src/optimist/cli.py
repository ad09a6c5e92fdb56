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

_COMPARE_EPILOG = """\
examples:
  optimist compare                      # the default study (1 to 3 minutes on 2 cores)
  optimist compare --task mnist-mlp --optimizers gd,sgd,minibatch,momentum,adagrad,rmsprop,\\
adadelta,adam --budget 3 --seeds 3 --tune --out runs/mnist
  optimist compare --task rosenbrock,beale --tune --workers 2
  optimist compare --task digits-mlp --optimizers adamw,lion,muon,schedule_free_adamw \
      --schedule warmup_cosine --tune      # adamw[schedule=warmup_cosine], ...
  optimist compare --model mypkg.nets:make_model --data mypkg.data:load --batch-size 64 \\
      --optimizers "sgd[momentum=0.9],adam[weight_decay=1e-4]" --tune lr,weight_decay --seeds 3

the answer: the verdict names the method to use with its learning rate, settings and batch size,
its margin with a 95% confidence interval over paired seeds, and the methods tied with it.

storage: the Optuna study lives in sqlite:///OUT/study.db unless --storage names another
database; several processes or machines given the same --storage URL (for example
postgresql://user:password@host/db) work on one comparison together. Browse a study with
`optuna-dashboard sqlite:///OUT/study.db` (pip install optuna-dashboard).
Re-running the same command resumes: finished trials are kept, cut-off ones are re-run.
"""


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors and exit status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise _UsageError(f"{self.prog}: {message}")


class _UsageError(Exception):
    pass


def _csv_list(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _method_list(text: str) -> list[str]:
    """Comma-separated methods; commas inside ``[...]`` settings belong to the method."""
    parts, depth, current = [], 0, ""
    for char in text:
        depth += {"[": 1, "]": -1}.get(char, 0)
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    return [p.strip() for p in parts if p.strip()]


def _lr_range(text: str) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LOW,HIGH, got {text!r}") from None
    return lo, hi


def _build_parser() -> _Parser:
    parser = _Parser(
        prog="optimist",
        description="Deep-learning optimizers on PyTorch, and fair side-by-side comparisons.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    c = sub.add_parser(
        "compare",
        help="run optimizers side by side on tasks and write a report",
        description="Compare optimization methods fairly (same budget, same tuning effort) "
        "and write report.html, results.json and results.csv to --out.",
        epilog=_COMPARE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    c.add_argument(
        "--task",
        "--tasks",
        dest="tasks",
        type=_csv_list,
        metavar="T[,T...]",
        help="tasks (see `optimist tasks`); default: the default study",
    )
    c.add_argument(
        "--optimizers",
        "--methods",
        dest="methods",
        type=_method_list,
        metavar="M[,M...]",
        help="methods (default: gd,sgd,minibatch,momentum,adagrad,rmsprop,adadelta,adam; "
        "any optimizer of `optimist optimizers` too: lion,muon,schedule_free_adamw,...); "
        "settings in brackets: adam[weight_decay=1e-4,betas=0.9:0.99,batch=64,schedule=wsd]",
    )
    c.add_argument(
        "--schedule",
        metavar="NAME",
        help="a learning-rate schedule for every method that names none, sized to each run: "
        "warmup_cosine, wsd, inverse_sqrt, linear, polynomial, step, exponential, one_cycle",
    )
    c.add_argument(
        "--batch-size",
        type=int,
        help="examples per step of every mini-batch method (default 32; gd stays full-batch, "
        "sgd batch 1)",
    )
    c.add_argument(
        "--model",
        metavar="MODULE:FUNCTION",
        help="your model: a function that returns a fresh torch.nn.Module (with --data)",
    )
    c.add_argument(
        "--data",
        metavar="MODULE:FUNCTION",
        help="your data: a function returning (x_train, y_train, x_val, y_val[, x_test, y_test])",
    )
    c.add_argument("--name", default="custom", help="the name of the --model/--data task")
    c.add_argument(
        "--loss",
        default="cross_entropy",
        help="loss of the --model/--data task: cross_entropy (classification) or mse",
    )
    c.add_argument(
        "--budget",
        type=float,
        help="epochs on data tasks, steps on 2-D functions (default: per task)",
    )
    c.add_argument("--budget-steps", type=int, help="optimizer steps on every task instead")
    c.add_argument(
        "--budget-unit",
        choices=("examples", "steps"),
        default="examples",
        help="what --budget holds equal on data tasks: examples seen (epochs, the default) or "
        "optimizer steps (then --budget is a step count, as --budget-steps)",
    )
    c.add_argument(
        "--seeds", type=int, help="evaluation runs per method (default 1; default study 3)"
    )
    c.add_argument(
        "--tune",
        nargs="?",
        const=["lr"],
        default=None,
        type=_csv_list,
        metavar="lr[,momentum,weight_decay]",
        help="tune each method with the same Optuna budget first: the learning rate (default), "
        "or also momentum / weight_decay where the optimizer has them (then with TPE)",
    )
    c.add_argument("--no-tune", dest="tune", action="store_const", const=[], help="no tuning")
    c.add_argument(
        "--sampler",
        choices=("grid", "tpe"),
        default="grid",
        help="tuning sampler: a log-spaced grid (deterministic) or TPE",
    )
    c.add_argument("--grid-size", type=int, default=7, help="tuning trials per method (7)")
    c.add_argument(
        "--lr-find",
        action="store_true",
        help="run the LR range test (optimist.lr_finder) per method on each data task first and "
        "use its suggestion instead of the default LR: the centre of the tuning grid, or the LR "
        "of the runs without --tune",
    )
    c.add_argument(
        "--lr-span",
        type=float,
        default=1.5,
        help="decades either side of each method's default LR to search (1.5)",
    )
    c.add_argument(
        "--lr-range",
        type=_lr_range,
        metavar="LOW,HIGH",
        help="search the same LR range for every method instead",
    )
    c.add_argument(
        "--pruner",
        choices=("sha", "hyperband", "none"),
        default="sha",
        help="prune poor tuning trials early on validation loss (sha: successive halving)",
    )
    c.add_argument("--evals", type=int, default=40, help="evaluation points per run (40)")
    c.add_argument(
        "--train-size", type=int, help="train on the first N training examples of data tasks"
    )
    c.add_argument(
        "--workers", type=int, help="parallel worker processes (default 1; default study: up to 2)"
    )
    c.add_argument("--out", default=None, help="output folder (default runs/compare)")
    c.add_argument("--storage", help="Optuna storage URL (default sqlite:///OUT/study.db)")
    c.add_argument("--no-report", action="store_true", help="skip report.html and plots")
    c.add_argument("--quiet", action="store_true", help="no progress bar or status lines")
    c.add_argument("--subsample", type=int, help=argparse.SUPPRESS)
    c.add_argument(
        "--study",
        metavar="FILE.toml",
        help="read options from a TOML file (keys: the options above, with _ for -); options "
        "on the command line win",
    )

    sub.add_parser("tasks", help="list the built-in tasks")
    sub.add_parser("optimizers", help="list the optimizers of optimist.optimizer()")
    sub.add_parser("methods", help="list the comparison methods (optimizer + batch regime)")

    t = sub.add_parser(
        "trajectories",
        help="draw optimizers' paths over a 2-D test function (PNG + GIF)",
        description="Run methods on a 2-D test function from its start point and draw their "
        "paths over its contour plot (paths.png) and as an animation (paths.gif).",
    )
    t.add_argument("--function", default="rosenbrock", help="a 2-D test function")
    t.add_argument(
        "--optimizers",
        "--methods",
        dest="methods",
        type=_csv_list,
        default=["gd", "momentum", "adam"],
        metavar="M[,M...]",
    )
    t.add_argument("--steps", type=int, help="steps (default: the function's own)")
    t.add_argument("--lr", type=float, help="one learning rate for all (default: per method)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--out", default="runs/trajectories")
    _add_diagnose_parser(sub)
    return parser


def _add_diagnose_parser(sub: Any) -> None:
    d = sub.add_parser(
        "diagnose",
        help="print the verdicts of a saved training-monitor log (and plot its signals)",
        description="Read a monitor log (JSON lines, written by optimist.monitor.watch(..., "
        "log=...) or Monitor(log=...)) and print the verdicts with evidence and advice. A log "
        "cut short by a killed run is read up to its last complete line.",
    )
    d.add_argument("logfile", help="the monitor log (.jsonl)")
    d.add_argument("--plot", metavar="OUT.png|OUT.svg", help="also plot every signal to this file")


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


STUDY_KEYS = (
    "tasks",
    "optimizers",
    "schedule",
    "model",
    "data",
    "name",
    "loss",
    "budget",
    "budget_unit",
    "budget_steps",
    "batch_size",
    "seeds",
    "tune",
    "sampler",
    "grid_size",
    "lr_span",
    "lr_range",
    "lr_find",
    "pruner",
    "evals",
    "train_size",
    "workers",
    "out",
    "storage",
)
"""Keys of a ``--study`` TOML file: the options of ``optimist compare``, with ``_`` for ``-``."""


def _study_argv(path: str) -> list[str]:
    """The command-line options written in a TOML study file, for example::

    tasks = ["digits-mlp"]
    optimizers = ["sgd[momentum=0.9]", "adam[weight_decay=1e-4]"]
    tune = ["lr", "weight_decay"]
    seeds = 3
    """
    try:
        import tomllib
    except ImportError:  # Python 3.10
        try:
            import tomli as tomllib  # type: ignore[no-redef]
        except ImportError:
            raise _UsageError(
                "optimist compare: --study needs Python 3.11 or `pip install tomli`"
            ) from None
    try:
        with open(path, "rb") as handle:
            table = tomllib.load(handle)
    except OSError as exc:
        raise _UsageError(f"optimist compare: cannot read --study {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise _UsageError(f"optimist compare: --study {path} is not valid TOML: {exc}") from None
    out: list[str] = []
    for key, value in table.items():
        if key not in STUDY_KEYS:
            raise _UsageError(
                f"optimist compare: unknown key {key!r} in {path}; known: {', '.join(STUDY_KEYS)}"
            )
        flag = "--" + key.replace("_", "-")
        if key == "tune" and value is False:
            out.append("--no-tune")
        elif value is True:
            out.append(flag)
        elif isinstance(value, list):
            out += [flag, ",".join(str(v) for v in value)]
        elif value is not False:
            out += [flag, str(value)]
    return out


def _expand_study(argv: list[str]) -> list[str]:
    """``compare --study FILE ...``: the file's options first, so that the command line's own
    options (which come after them) win."""
    if not argv or argv[0] != "compare":
        return argv
    rest, files = [argv[0]], []
    i = 1
    while i < len(argv):
        if argv[i] == "--study" and i + 1 < len(argv):
            files.append(argv[i + 1])
            i += 2
            continue
        if argv[i].startswith("--study="):
            files.append(argv[i].split("=", 1)[1])
        else:
            rest.append(argv[i])
        i += 1
    expanded = [argv[0]]
    for path in files:
        expanded += _study_argv(path)
    return expanded + rest[1:]


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
