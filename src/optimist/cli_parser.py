"""The ``optimist`` command line's arguments: the parser, its converters, and ``--study`` files.

:func:`_build_parser` builds the ``argparse`` parser of every subcommand (errors raise
:class:`_UsageError`: one line, exit status 2); :func:`_expand_study` turns ``compare --study
FILE.toml`` into the file's options, placed before the command line's own.
"""

from __future__ import annotations

import argparse
from typing import Any

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
