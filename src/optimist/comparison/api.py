"""The coordinator: checks the settings, runs the work (in-process or in worker processes) with
a progress bar, then collects the results from the studies and writes the report."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import math
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optimist
from optimist.comparison import results as results_io
from optimist.comparison import study as st
from optimist.comparison.interrupts import interrupt_once
from optimist.comparison.methods import METHODS
from optimist.comparison.runner import (
    TUNE_SEED,
    Config,
    Context,
    RunError,
    build_groups,
    resolve_method,
    resolve_tasks,
    work,
)
from optimist.comparison.safety import redact, scrub, secrets_of
from optimist.comparison.tasks import DATA_SOURCES, TASKS, DataTask, Task

__all__ = [
    "MAX_STEPS",
    "CompareResult",
    "ConfigError",
    "RunError",
    "check_config",
    "collect",
    "run",
]

MAX_STEPS = 5_000_000
"""The most optimizer steps one run may take (a budget beyond it is a typo, not a plan)."""


class ConfigError(ValueError):
    """A bad setting (one line, meant for the user)."""


@dataclass
class CompareResult:
    """What :func:`optimist.compare` returns."""

    results: dict[str, Any]
    """The ``results.json`` document."""
    out: Path
    report: Path | None
    interrupted: bool = False

    @property
    def summary(self) -> list[dict[str, Any]]:
        return self.results["summary"]

    def ranking(self, task: str) -> list[str]:
        """Method names of ``task``, best first."""
        return [r["method"] for r in self.summary if r["task"] == task and r["rank"]]

    def table(self, width: int | None = 120) -> str:
        """The verdict and the tables as text, as the command prints them."""
        from optimist.comparison.report import text_table

        return text_table(self.results, width=width)

    def to_pandas(self):
        """The summary as a pandas DataFrame: one row per (task, method), ranked per task
        (needs pandas: ``pip install pandas``)."""
        from optimist.comparison.tables import summary_frame

        return summary_frame(self.results)

    def _repr_html_(self) -> str:
        """The verdict and the tables, shown when a notebook cell displays the result."""
        from optimist.comparison.report import render_html

        return render_html(self.results, fragment=True)


def _positive(name: str, value: Any, kind: type = float) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ConfigError(f"{name} must be a positive number, got {value!r}")
    if not math.isfinite(value):
        raise ConfigError(f"{name} must be a finite number, got {value!r}")
    if kind is int and int(value) != value:
        raise ConfigError(f"{name} must be a whole number, got {value!r}")


def check_config(config: Config) -> list[Task]:
    """Validate ``config``; returns its tasks (data loaded). Raises :class:`ConfigError`."""
    if not config.tasks:
        raise ConfigError("no task given; known tasks: " + ", ".join(TASKS))
    for entry in config.tasks:
        if isinstance(entry, str) and entry not in TASKS:
            raise ConfigError(f"unknown task {entry!r}; known tasks: {', '.join(TASKS)}")
    if not config.methods:
        raise ConfigError("no method given; known methods: " + ", ".join(METHODS))
    for name in config.methods:
        if "[" in name:
            try:
                resolve_method(name, config)
            except KeyError as exc:
                raise ConfigError(str(exc.args[0])) from None
        elif name not in METHODS:
            raise ConfigError(f"unknown method {name!r}; known methods: {', '.join(METHODS)}")
    if len(set(config.methods)) != len(config.methods):
        raise ConfigError("a method is listed twice: " + ",".join(config.methods))
    _positive("budget", config.budget)
    _positive("budget-steps", config.budget_steps, int)
    _positive("seeds", config.seeds, int)
    _positive("workers", config.workers, int)
    _positive("grid-size", config.grid_size, int)
    _positive("n-evals", config.n_evals, int)
    _positive("subsample", config.subsample, int)
    _positive("train-size", config.train_size, int)
    _positive("batch-size", config.batch_size, int)
    if config.lr_span < 0 or not math.isfinite(config.lr_span):
        raise ConfigError(f"lr-span must be >= 0, got {config.lr_span!r}")
    if config.lr_range is not None:
        lo, hi = config.lr_range
        if not (0 < lo <= hi and math.isfinite(hi)):
            raise ConfigError(f"lr-range must be 0 < LOW <= HIGH, got {lo!r},{hi!r}")
    from optimist.comparison.runner import TUNABLE

    unknown = [p for p in config.tune_params if p != "lr" and p not in TUNABLE]
    if unknown or "lr" not in config.tune_params:
        raise ConfigError(
            f"--tune takes lr plus any of {', '.join(TUNABLE)}, got {','.join(config.tune_params)}"
        )
    if config.sampler not in ("grid", "tpe"):
        raise ConfigError(f"unknown sampler {config.sampler!r}; use grid or tpe")
    if config.pruner not in ("sha", "hyperband", "none"):
        raise ConfigError(f"unknown pruner {config.pruner!r}; use sha, hyperband or none")
    out = Path(config.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out, prefix=".write-test-"):
            pass
    except OSError as exc:
        raise ConfigError(f"cannot write to --out {str(out)!r}: {exc.strerror or exc}") from None
    tasks = resolve_tasks(config)
    from optimist.datasets import DatasetNotAvailableError

    for task in tasks:
        if isinstance(task, DataTask):
            try:
                data = task.data(config.subsample)
            except DatasetNotAvailableError as exc:
                first = str(exc).strip().splitlines()[0]
                raise ConfigError(
                    f"task {task.name!r} needs data that is missing: {first}"
                ) from None
            if len(data.y_train) == 0 or len(data.y_val) == 0:
                raise ConfigError(f"task {task.name!r} has no training or validation data")
    for group in build_groups(config, tasks):
        if config.budget_steps is not None:
            what = f"budget-steps {config.budget_steps}"
        elif config.budget is not None:
            what = f"budget {config.budget:g}"
        else:
            what = "the default budget"
        if group.steps < 1:
            raise ConfigError(
                f"{what} gives {group.method.name} no optimizer step on {group.task.name}; "
                "give a budget of at least one step"
            )
        if group.steps > MAX_STEPS:
            raise ConfigError(
                f"{what} means {group.steps:.3g} optimizer steps for {group.method.name} on "
                f"{group.task.name}; the most is {MAX_STEPS:,} per run"
            )
    return tasks


# --- progress -------------------------------------------------------------------------------


def _fmt(value: Any, spec: str = ".4g") -> str:
    if value is None:
        return "-"
    return format(value, spec)


def status_line(event: dict[str, Any]) -> str:
    if event["type"] == "error":
        return (
            f"{event['phase']:5s} {event['task']:16s} {event['method']:10s} "
            f"seed={event['seed']}: ERROR {event['error']}"
        )
    final = event["final"]
    acc = final.get("val_acc")
    metric = f"val_loss={_fmt(final['val_loss'])}"
    if acc is not None:
        metric += f" acc={acc:.1%}"
    return (
        f"{event['phase']:5s} {event['task']:16s} {event['method']:10s} lr={event['lr']:.3g} "
        f"seed={event['seed']!s:4s} {event['state']:8s} {metric} "
        f"({final['steps']} steps, {final['time_s']:.2f}s)"
    )


class _Progress:
    """The progress bar and per-trial lines (secrets scrubbed); remembers a worker's fatal
    environment error so that the coordinator can stop with it."""

    def __init__(self, total: int, done: int, quiet: bool, secrets: list[str]) -> None:
        self.quiet = quiet
        self.secrets = secrets
        self.fatal: str | None = None
        self.bar = None
        if not quiet:
            from tqdm.auto import tqdm

            self.bar = tqdm(
                total=total,
                initial=done,
                unit="trial",
                desc="compare",
                dynamic_ncols=True,
                file=sys.stderr,
            )

    def __call__(self, event: dict[str, Any]) -> None:
        if event["type"] == "worker_error" and event.get("fatal") and self.fatal is None:
            self.fatal = scrub(event["error"], self.secrets)
        if self.quiet or event["type"] not in ("done", "error", "worker_error"):
            return
        if event["type"] == "worker_error":
            line = f"worker {event['pid']} stopped: {event['error']}"
            self.bar.write(scrub(line, self.secrets), file=sys.stderr)
            return
        self.bar.write(scrub(status_line(event), self.secrets), file=sys.stderr)
        self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


# --- collecting the results -----------------------------------------------------------------


def _run_record(group, phase: str, trial) -> dict[str, Any] | None:
    result = trial.user_attrs.get("result")
    if result is not None and not _well_formed(result):
        result = None  # a damaged row: treated as not run (see study.trial_is_done)
        if "error" not in trial.user_attrs:
            return None
    if "error" in trial.user_attrs and result is None:
        result = {
            "state": "error",
            "objective": None,
            "curves": None,
            "final": None,
            "trajectory": None,
        }
    if result is None:
        return None
    record = {
        "task": group.task.name,
        "method": group.method.name,
        "phase": phase,
        "lr": float(trial.params.get("lr", math.nan)),
        "seed": trial.user_attrs.get("seed"),
        **result,
        "study": group.tune_name if phase == "tune" else group.final_name,
        "trial_number": trial.number,
    }
    if "error" in trial.user_attrs:
        record["error"] = str(trial.user_attrs["error"])
    return record


def _well_formed(result: Any) -> bool:
    return isinstance(result, dict) and st.result_is_well_formed(result)


def _protocol(config: Config) -> dict[str, Any]:
    return {
        "tuned": config.tune,
        "sampler": config.sampler if config.tune else None,
        "grid_size": config.grid_size if config.tune else None,
        "lr_span_decades": config.lr_span if config.tune and not config.lr_range else None,
        "lr_range": list(config.lr_range) if config.lr_range else None,
        "pruner": config.pruner if config.tune else None,
        "tune_seed": TUNE_SEED if config.tune else None,
        "tune_params": list(config.tune_params) if config.tune else None,
        "seeds": config.seeds,
        "n_evals": config.n_evals,
        "budget": config.budget,
        "budget_steps": config.budget_steps,
        "subsample": config.subsample,
        "train_size": config.train_size,
        "workers": config.workers,
        "lr_find": config.lr_find,
        "storage": st.redact(config.storage_url),
        "selection": (
            "lowest final validation loss (2-D functions: lowest mean log10 gap over the "
            "evaluation points) among tuning trials that completed without diverging"
            if config.tune
            else "documented default learning rates, no tuning"
        ),
    }


def collect(ctx: Context, *, status: str, wall_time_s: float | None) -> dict[str, Any]:
    """The ``results.json`` document from the studies (whatever is finished so far)."""
    from optimist.comparison.recommend import recommend, verdicts

    config = ctx.config
    runs: list[dict[str, Any]] = []
    tuning: list[dict[str, Any]] = []
    rows: list[dict[str, Any]] = []
    tasks: dict[str, Any] = {}
    for group in ctx.groups:
        entry = tasks.setdefault(
            group.task.name,
            {
                **group.task.as_dict(),
                "budget": config.budget if config.budget is not None else group.task.default_budget,
                "budget_steps": config.budget_steps,
                "steps": {},
            },
        )
        entry["steps"][group.method.name] = group.steps
        mine_tune: list[dict[str, Any]] = []
        tune_done = True
        if config.tune:
            for trial in ctx.trials(group, "tune"):
                if st.trial_is_done(trial):
                    record = _run_record(group, "tune", trial)
                    if record is not None:
                        mine_tune.append(record)
            tune_done = ctx.phase_done("tune", group)
        tuning.extend(mine_tune)
        mine: list[dict[str, Any]] = []
        lr, source = None, "tuning not finished"
        if tune_done:
            outcome = ctx.final_lr(group)
            lr, source = outcome.lr, outcome.source
            keys = {i.key for i in ctx.planned(group, "final")}
            seen: set[str] = set()
            for trial in ctx.trials(group, "final"):
                key = trial.user_attrs.get("key")
                if key in keys and key not in seen and st.trial_is_done(trial):
                    record = _run_record(group, "final", trial)
                    if record is not None:
                        seen.add(key)
                        mine.append(record)
            mine.sort(key=lambda r: str(r["seed"]))
        runs.extend(mine)
        row = results_io.summarize(
            group.task.name, group.task.kind, group.method.name, lr, source, mine, mine_tune
        )
        row["tuned_settings"] = dict(ctx.final_lr(group).params) if tune_done else {}
        row["lr_found"] = group.found_lr
        rows.append(row)
    summary = results_io.rank(rows, runs, tasks)
    document = {
        "schema_version": results_io.SCHEMA_VERSION,
        "generator": f"optimist {optimist.__version__}",
        "created": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "status": status,
        "command": redact(config.command) if config.command else None,
        "wall_time_s": wall_time_s,
        "protocol": _protocol(config),
        "tasks": tasks,
        "methods": {m: resolve_method(m, config).as_dict() for m in config.methods},
        "runs": runs,
        "tuning": tuning,
        "summary": summary,
        "recommendations": {},
    }
    if config.found_lrs:
        document["lr_finder"] = {
            label: {k: v for k, v in entry.items() if k != "signature"}
            for label, entry in config.found_lrs.items()
        }
    document["recommendations"] = recommend(document)
    document["verdicts"] = verdicts(document)
    return scrub(results_io.finite(document), secrets_of(config.storage_url))


def write_outputs(document: dict[str, Any], out: Path, *, report: bool) -> Path | None:
    """Write ``results.json``, ``results.csv`` and (with ``report``) the report; an OSError
    becomes a one-line :class:`RunError`."""
    out = Path(out)
    results_io.validate(document)
    try:
        results_io.write_json(out / "results.json", document)
        results_io.write_csv(out / "results.csv", document["summary"])
        if not report:
            return None
        from optimist.comparison.report import write_report

        return write_report(document, out)
    except OSError as exc:
        from optimist.comparison.runner import describe_environment_error

        raise RunError(
            f"cannot write the results: {describe_environment_error(exc)}; the trials are kept "
            "in the study, so fix that and run the same command again"
        ) from None


def _storage_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that mean the study database is unreadable or damaged."""
    import json
    import sqlite3

    import sqlalchemy.exc

    return (sqlalchemy.exc.SQLAlchemyError, sqlite3.Error, json.JSONDecodeError)


def run(config: Config) -> CompareResult:
    """Run a comparison end to end (see :func:`optimist.compare`).

    Raises :class:`ConfigError` for bad settings and :class:`RunError` when the machine or the
    study database fails (the work done so far is kept; re-running resumes)."""
    start = time.perf_counter()
    secrets = secrets_of(config.storage_url)
    tasks = check_config(config)
    if config.lr_find and config.found_lrs is None:
        from optimist.comparison.lr_find import find_lrs

        methods = [resolve_method(m, config) for m in config.methods]
        found = find_lrs(tasks, methods, config.subsample, Path(config.out))
        config = dataclasses.replace(config, found_lrs=found)
    damaged = _storage_errors()
    try:
        ctx = Context(config, tasks=tasks)
    except st.StorageError as exc:
        raise ConfigError(scrub(str(exc), secrets)) from None
    except damaged as exc:
        raise _damaged(config, exc, secrets) from None
    with interrupt_once():
        try:
            done, total = ctx.count()
        except damaged as exc:
            raise _damaged(config, exc, secrets) from None
        progress = _Progress(total, done, config.quiet, secrets)
        interrupted = False
        failure: RunError | None = None
        try:
            if config.workers > 1:
                from optimist.comparison.workers import run_workers

                run_workers(config, config.workers, progress)
            if progress.fatal is not None:
                raise RunError(progress.fatal)
            work(ctx, progress)
        except KeyboardInterrupt:
            interrupted = True
        except RunError as exc:
            failure = RunError(scrub(str(exc), secrets))
        except damaged as exc:
            failure = _damaged(config, exc, secrets)
        finally:
            progress.close()
        try:
            for phase in ctx.phases:
                ctx.recover(phase, own=interrupted or failure is not None)
            complete = all(ctx.phase_done(p, g) for g in ctx.groups for p in ctx.phases)
            document = collect(
                ctx,
                status="complete" if complete and not (interrupted or failure) else "partial",
                wall_time_s=time.perf_counter() - start,
            )
        except damaged as exc:
            raise _damaged(config, exc, secrets) from None
        if failure is not None:
            with contextlib.suppress(RunError):  # best effort: the disk may still be full
                write_outputs(document, Path(config.out), report=False)
            raise failure
        try:
            report = write_outputs(document, Path(config.out), report=config.report)
        except KeyboardInterrupt:  # the first Ctrl-C came while writing: later ones are ignored
            interrupted = True
            report = None
            document = collect(ctx, status="partial", wall_time_s=time.perf_counter() - start)
            write_outputs(document, Path(config.out), report=False)
    return CompareResult(document, Path(config.out), report, interrupted)


def _damaged(config: Config, exc: BaseException, secrets: list[str]) -> RunError:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return RunError(
        scrub(
            f"cannot read the study database {redact(config.storage_url)}: it looks damaged "
            f"({type(exc).__name__}: {text[:200]}); move it away (or choose a new --out) to "
            "start afresh",
            secrets,
        )
    )


def data_available(task: str) -> bool:
    """Whether a built-in task's data set can be loaded here (2-D functions: always)."""
    source = DATA_SOURCES.get(task)
    if source is None:
        return True
    from optimist.datasets import DatasetNotAvailableError

    try:
        TASKS[task].data(subsample=1)
    except (DatasetNotAvailableError, ImportError, OSError):
        return False
    return True
