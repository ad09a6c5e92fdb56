"""The coordinator: checks the settings, runs the work (in-process or in worker processes) with
a progress bar, then collects the results from the studies and writes the report."""

from __future__ import annotations

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
from optimist.comparison.methods import METHODS
from optimist.comparison.runner import TUNE_SEED, Config, Context, resolve_tasks, work
from optimist.comparison.tasks import DATA_SOURCES, TASKS, DataTask, Task

__all__ = ["CompareResult", "ConfigError", "check_config", "collect", "run"]


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

    def table(self) -> str:
        from optimist.comparison.report import text_table

        return text_table(self.results)


def _positive(name: str, value: Any, kind: type = float) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ConfigError(f"{name} must be a positive number, got {value!r}")
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
        if name not in METHODS:
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
    if config.lr_span < 0 or not math.isfinite(config.lr_span):
        raise ConfigError(f"lr-span must be >= 0, got {config.lr_span!r}")
    if config.lr_range is not None:
        lo, hi = config.lr_range
        if not (0 < lo <= hi and math.isfinite(hi)):
            raise ConfigError(f"lr-range must be 0 < LOW <= HIGH, got {lo!r},{hi!r}")
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
    def __init__(self, total: int, done: int, quiet: bool) -> None:
        self.quiet = quiet
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
        if self.quiet or event["type"] not in ("done", "error", "worker_error"):
            return
        if event["type"] == "worker_error":
            self.bar.write(f"worker {event['pid']} stopped: {event['error']}", file=sys.stderr)
            return
        self.bar.write(status_line(event), file=sys.stderr)
        self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


# --- collecting the results -----------------------------------------------------------------


def _run_record(group, phase: str, trial) -> dict[str, Any] | None:
    result = trial.user_attrs.get("result")
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


def _protocol(config: Config) -> dict[str, Any]:
    return {
        "tuned": config.tune,
        "sampler": config.sampler if config.tune else None,
        "grid_size": config.grid_size if config.tune else None,
        "lr_span_decades": config.lr_span if config.tune and not config.lr_range else None,
        "lr_range": list(config.lr_range) if config.lr_range else None,
        "pruner": config.pruner if config.tune else None,
        "tune_seed": TUNE_SEED if config.tune else None,
        "seeds": config.seeds,
        "n_evals": config.n_evals,
        "budget": config.budget,
        "budget_steps": config.budget_steps,
        "subsample": config.subsample,
        "train_size": config.train_size,
        "workers": config.workers,
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
    from optimist.comparison.recommend import recommend

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
        rows.append(
            results_io.summarize(
                group.task.name, group.task.kind, group.method.name, lr, source, mine, mine_tune
            )
        )
    summary = results_io.rank(rows)
    document = {
        "schema_version": results_io.SCHEMA_VERSION,
        "generator": f"optimist {optimist.__version__}",
        "created": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "status": status,
        "command": config.command,
        "wall_time_s": wall_time_s,
        "protocol": _protocol(config),
        "tasks": tasks,
        "methods": {m: METHODS[m].as_dict() for m in config.methods},
        "runs": runs,
        "tuning": tuning,
        "summary": summary,
        "recommendations": {},
    }
    document["recommendations"] = recommend(document)
    return results_io.finite(document)


def write_outputs(document: dict[str, Any], out: Path, *, report: bool) -> Path | None:
    out = Path(out)
    results_io.validate(document)
    results_io.write_json(out / "results.json", document)
    results_io.write_csv(out / "results.csv", document["summary"])
    if not report:
        return None
    from optimist.comparison.report import write_report

    return write_report(document, out)


def run(config: Config) -> CompareResult:
    """Run a comparison end to end (see :func:`optimist.compare`)."""
    start = time.perf_counter()
    tasks = check_config(config)
    try:
        ctx = Context(config, tasks=tasks)
    except st.StorageError as exc:
        raise ConfigError(str(exc)) from None
    done, total = ctx.count()
    progress = _Progress(total, done, config.quiet)
    interrupted = False
    try:
        if config.workers > 1:
            from optimist.comparison.workers import run_workers

            run_workers(config, config.workers, progress)
        work(ctx, progress)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        progress.close()
    try:
        for phase in ctx.phases:
            ctx.recover(phase, own=interrupted)
        complete = all(ctx.phase_done(p, g) for g in ctx.groups for p in ctx.phases)
        document = collect(
            ctx,
            status="complete" if complete and not interrupted else "partial",
            wall_time_s=time.perf_counter() - start,
        )
        report = write_outputs(document, Path(config.out), report=config.report)
    except KeyboardInterrupt:
        interrupted = True
        report = None
        document = collect(ctx, status="partial", wall_time_s=time.perf_counter() - start)
        write_outputs(document, Path(config.out), report=False)
    return CompareResult(document, Path(config.out), report, interrupted)


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
