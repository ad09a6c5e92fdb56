"""The work loop shared by the coordinating process, its worker processes and other machines.

Every process that works on a comparison runs :func:`work` on the same :class:`Config`: it claims
trials from the Optuna studies one at a time (see :mod:`optimist.comparison.study`), runs them and
records them, phase by phase (tuning first, then the evaluation runs at each method's best
learning rate). Everything a process decides is derived from the study, so any number of
processes, started at any time, cooperate on one comparison.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import torch
from optuna.trial import TrialState

from optimist.comparison import results as results_io
from optimist.comparison import study as st
from optimist.comparison.interrupts import deferred_sigint, interrupt_once
from optimist.comparison.methods import Method, get_method, with_batch_size
from optimist.comparison.safety import is_environment_error
from optimist.comparison.tasks import DataTask, Task, get_task
from optimist.comparison.training_loop import run_trial

__all__ = ["Config", "Context", "Group", "Item", "RunError", "interrupt_once", "work"]

TUNE_SEED = "tune"
"""Tuning trials use their own seed, so the chosen LR is not scored on the run that chose it."""

EventFn = Callable[[dict[str, Any]], None]


class RunError(RuntimeError):
    """The comparison cannot go on for a reason outside the trials (disk full, permission denied,
    an I/O error, a killed worker, a damaged study database). One line, meant for the user; the
    trial that hit it is left to be retried when the same command is run again."""


def describe_environment_error(exc: BaseException) -> str:
    """``No space left on device (errno 28, ENOSPC): /path`` for an OSError, else its text."""
    import errno as errno_module

    if isinstance(exc, OSError) and exc.errno is not None:
        name = errno_module.errorcode.get(exc.errno, str(exc.errno))
        where = f": {exc.filename}" if exc.filename else ""
        return f"{exc.strerror or exc} ({name}){where}"
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


@dataclass
class Config:
    """Everything that defines one comparison (picklable: it travels to worker processes)."""

    tasks: list[Any]
    """Task names or :class:`~optimist.comparison.tasks.Task` objects."""
    methods: list[str]
    out: Path
    budget: float | None = None
    budget_steps: int | None = None
    seeds: int = 1
    tune: bool = False
    sampler: str = "grid"
    grid_size: int = 7
    lr_span: float = 1.5
    """Decades on each side of a method's default LR covered by the tuning grid."""
    lr_range: tuple[float, float] | None = None
    """The same LR range for every method instead of ``default * 10**(+-lr_span)``."""
    pruner: str = "sha"
    n_evals: int = 40
    subsample: int | None = None
    train_size: int | None = None
    workers: int = 1
    storage: str | None = None
    quiet: bool = False
    report: bool = True
    command: str | None = None
    batch_size: int | None = None
    """Examples per step of every mini-batch method (default: each method's own, 32)."""
    tune_params: tuple[str, ...] = ("lr",)
    """What tuning searches: the learning rate, plus any of :data:`TUNABLE` (with TPE)."""
    lr_find: bool = False
    """Run the LR range test per method on each data task and use its suggestion instead of
    the documented default (see :mod:`optimist.comparison.lr_find`)."""
    found_lrs: dict[str, dict[str, Any]] | None = None
    """The range tests' results by ``"task/method"``, filled in by the coordinator (so that
    worker processes use the very same numbers)."""

    @property
    def storage_url(self) -> str:
        if self.storage:
            return self.storage
        return f"sqlite:///{Path(self.out).resolve() / 'study.db'}"


TUNABLE: dict[str, tuple[float, float, bool]] = {
    "momentum": (0.0, 0.99, False),
    "weight_decay": (1e-6, 0.1, True),
}
"""Settings ``--tune`` can search besides the learning rate: (low, high, log scale)."""


def tunable(method: Method, names: tuple[str, ...]) -> tuple[str, ...]:
    """The settings of ``names`` (besides ``lr``) that ``method``'s optimizer accepts."""
    found = []
    for name in names:
        if name == "lr" or name not in TUNABLE:
            continue
        low, high, log = TUNABLE[name]
        middle = math.sqrt(low * high) if log else (low + high) / 2
        trial = dataclasses.replace(method, kwargs={**method.kwargs, name: middle})
        try:
            trial.build([torch.zeros(1, requires_grad=True)], 1e-3)
        except (TypeError, ValueError):
            continue
        found.append(name)
    return tuple(found)


@dataclass(frozen=True)
class Item:
    """One planned trial."""

    key: str
    lr: float | None
    seed: Any
    params: tuple[tuple[str, float], ...] = ()


@dataclass
class Group:
    """One (task, method) pair with its studies."""

    task: Task
    method: Method
    steps: int
    default_lr: float
    grid: list[float]
    tune_name: str
    final_name: str
    extra: tuple[str, ...] = ()
    """Settings tuned besides the learning rate (then the sampler is TPE)."""
    found_lr: float | None = None
    """The LR finder's suggestion that replaced the documented default (``--lr-find``)."""

    @property
    def sampler(self) -> str | None:
        return "tpe" if self.extra else None

    @property
    def label(self) -> str:
        return f"{self.task.name}/{self.method.name}"


def resolve_tasks(config: Config) -> list[Task]:
    """The config's tasks as Task objects (``train_size`` applied to data tasks)."""
    tasks: list[Task] = []
    for entry in config.tasks:
        task = get_task(entry) if isinstance(entry, str) else entry
        if config.train_size is not None and isinstance(task, DataTask):
            task = dataclasses.replace(task, train_size=config.train_size)
        tasks.append(task)
    return tasks


def lr_grid(default_lr: float, config: Config) -> list[float]:
    """The tuning grid, log-spaced, ordered from the centre outwards (centre, below, above...)."""
    k = config.grid_size
    if config.lr_range is not None:
        lo, hi = (math.log10(v) for v in config.lr_range)
    else:
        lo = math.log10(default_lr) - config.lr_span
        hi = math.log10(default_lr) + config.lr_span
    values = [
        10 ** (lo + (hi - lo) * i / (k - 1)) if k > 1 else 10 ** ((lo + hi) / 2) for i in range(k)
    ]
    values = [float(f"{v:.6g}") for v in values]
    centre = (k - 1) / 2
    order = sorted(range(k), key=lambda i: (abs(i - centre), i))
    return [values[i] for i in order]


def resolve_method(name: str, config: Config) -> Method:
    """The method ``name`` (with ``[settings]``), at the config's ``batch_size``."""
    return with_batch_size(get_method(name), config.batch_size)


def build_groups(config: Config, tasks: list[Task]) -> list[Group]:
    groups = []
    for task in tasks:
        for name in config.methods:
            method = resolve_method(name, config)
            steps = task.total_steps(method, config.budget, config.budget_steps, config.subsample)
            default_lr = task.default_lr(method)
            found = (config.found_lrs or {}).get(f"{task.name}/{method.name}") or {}
            found_lr = found.get("suggestion")
            if found_lr is not None:
                default_lr = found_lr
            grid = lr_grid(default_lr, config)
            base = {
                "task": task.signature(config.subsample),
                "method": {
                    "optimizer": method.optimizer,
                    "kwargs": method.kwargs,
                    "batch": method.batch,
                    "noise": method.noisy_on_functions,
                    **({"mini_batch": method.mini_batch} if method.batch == "mini" else {}),
                },
                "steps": steps,
                "n_evals": config.n_evals,
                "trial_version": 2,  # 2: steps to target count only a target kept to the end
            }
            extra = tunable(method, tuple(config.tune_params))
            tune_sig = st.signature(
                {
                    **base,
                    "grid": sorted(grid),
                    "sampler": "tpe" if extra else config.sampler,
                    "pruner": config.pruner,
                    **({"tune_params": list(extra)} if extra else {}),
                }
            )
            groups.append(
                Group(
                    task=task,
                    method=method,
                    steps=steps,
                    default_lr=default_lr,
                    grid=grid,
                    tune_name=f"{task.name}/{method.name}/tune/{tune_sig}",
                    extra=extra,
                    final_name=f"{task.name}/{method.name}/final/{st.signature(base)}",
                    found_lr=found_lr,
                )
            )
    return groups


class Context:
    """Per-process state: the storage, the groups, cached Study objects and tuning outcomes."""

    def __init__(self, config: Config, *, tasks: list[Task] | None = None) -> None:
        self.config = config
        self.url = config.storage_url
        self.storage = st.open_storage(self.url)
        self.tasks = tasks if tasks is not None else resolve_tasks(config)
        self.groups = build_groups(config, self.tasks)
        self._studies: dict[str, optuna.Study] = {}
        self._finished: set[tuple[str, str]] = set()
        self._lr: dict[str, st.TuneOutcome] = {}
        self.phases = (["tune"] if config.tune else []) + ["final"]

    # --- studies ----------------------------------------------------------------------------

    def study(self, group: Group, phase: str) -> optuna.Study:
        name = group.tune_name if phase == "tune" else group.final_name
        found = self._studies.get(name)
        if found is None:
            seed = int(st.signature({"study": name}), 16) % (2**31)
            if phase == "tune":
                sampler = st.make_sampler(group.sampler or self.config.sampler, group.grid, seed)
                pruner = st.make_pruner(self.config.pruner, self.config.n_evals)
            else:
                sampler = optuna.samplers.RandomSampler(seed=seed)
                pruner = optuna.pruners.NopPruner()
            found = optuna.create_study(
                study_name=name,
                storage=self.storage,
                sampler=sampler,
                pruner=pruner,
                direction="minimize",
                load_if_exists=True,
            )
            self._studies[name] = found
        return found

    def trials(self, group: Group, phase: str) -> list[optuna.trial.FrozenTrial]:
        return self.study(group, phase).get_trials(deepcopy=False)

    def final_lr(self, group: Group) -> st.TuneOutcome:
        """The LR of the evaluation runs: tuned (once tuning is done) or the default."""
        if not self.config.tune:
            source = "lr-finder" if group.found_lr is not None else "default"
            return st.TuneOutcome(group.default_lr, source)
        outcome = self._lr.get(group.label)
        if outcome is None:
            outcome = st.best_lr(self.trials(group, "tune"), group.default_lr)
            self._lr[group.label] = outcome
        return outcome

    def planned(self, group: Group, phase: str) -> list[Item]:
        if phase == "tune":
            if (group.sampler or self.config.sampler) == "tpe":
                return [Item(f"tpe-{i}", None, TUNE_SEED) for i in range(self.config.grid_size)]
            return [Item(st.key_of(lr, TUNE_SEED), lr, TUNE_SEED) for lr in group.grid]
        outcome = self.final_lr(group)
        lr, params = outcome.lr, outcome.params
        return [
            Item(st.key_of(lr, seed, params), lr, seed, params) for seed in range(self.config.seeds)
        ]

    def tune_bounds(self, group: Group) -> tuple[float, float]:
        return min(group.grid), max(group.grid)

    # --- progress ---------------------------------------------------------------------------

    def count(self) -> tuple[int, int]:
        """(trials done, trials planned in all) over every phase, for the progress bar."""
        per_group = (self.config.grid_size if self.config.tune else 0) + self.config.seeds
        total = per_group * len(self.groups)
        done = 0
        for group in self.groups:
            for phase in self.phases:
                if phase == "final" and self.config.tune and not self.phase_done("tune", group):
                    continue
                keys = {i.key for i in self.planned(group, phase)}
                done += len(
                    {
                        t.user_attrs.get("key")
                        for t in self.trials(group, phase)
                        if st.trial_is_done(t)
                    }
                    & keys
                )
        return done, total

    def phase_done(self, phase: str, group: Group) -> bool:
        keys = {i.key for i in self.planned(group, phase)}
        done = {t.user_attrs.get("key") for t in self.trials(group, phase) if st.trial_is_done(t)}
        return keys <= done

    # --- claiming ---------------------------------------------------------------------------

    def claim(self, phase: str) -> tuple[Any, bool]:
        """``(claimed, all_done)``: the next trial of ``phase`` this process should run."""
        all_done = True
        with st.storage_lock(self.url):
            for group in self.groups:
                if (group.label, phase) in self._finished:
                    continue
                study = self.study(group, phase)
                trials = study.get_trials(deepcopy=False)
                done = {t.user_attrs.get("key") for t in trials if st.trial_is_done(t)}
                pending = [i for i in self.planned(group, phase) if i.key not in done]
                if not pending:
                    self._finished.add((group.label, phase))
                    continue
                all_done = False
                running = [t for t in trials if t.state == TrialState.RUNNING]
                if phase == "tune" and running:
                    continue
                running_keys = {t.user_attrs.get("key") for t in running}
                free = [i for i in pending if i.key not in running_keys]
                if not free:
                    continue
                self._drop_waiting(study, trials)
                return (group, phase, study, self._create(study, free[0], phase)), False
        return None, all_done

    def _drop_waiting(self, study: optuna.Study, trials: list[Any]) -> None:
        """Fail WAITING trials left by a process that died between enqueueing and asking."""
        for _ in [t for t in trials if t.state == TrialState.WAITING]:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                stale = study.ask()
            study.tell(stale, state=TrialState.FAIL)

    def _create(self, study: optuna.Study, item: Item, phase: str) -> tuple[Any, Item]:
        attrs = {
            "key": item.key,
            "seed": item.seed,
            "phase": phase,
            "host": st.HOST,
            "pid": os.getpid(),
        }
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if item.lr is not None:
                study.enqueue_trial({"lr": item.lr, **dict(item.params)}, user_attrs=attrs)
                trial = study.ask()
            else:
                trial = study.ask()
                for name, value in attrs.items():
                    trial.set_user_attr(name, value)
        return trial, item

    def recover(self, phase: str, *, own: bool = False) -> int:
        """Fail trials of ``phase`` whose process died (with ``own``, also this process's),
        so that their keys run again."""
        failed = 0
        for group in self.groups:
            if (group.label, phase) not in self._finished:
                failed += st.recover_dead_trials(self.study(group, phase), own=own)
        return failed

    # --- running ----------------------------------------------------------------------------

    def execute(self, claimed: tuple[Any, ...], on_event: EventFn | None) -> None:
        group, phase, study, (trial, item) = claimed
        config = self.config
        heartbeat = None
        try:
            with deferred_sigint(), warnings.catch_warnings():
                heartbeat = st.Heartbeat(self.storage, trial._trial_id)
                warnings.simplefilter("ignore")
                if phase == "tune":
                    lo, hi = self.tune_bounds(group)
                    lr = trial.suggest_float("lr", lo, hi, log=True)
                else:
                    d = st.FINAL_LR_DISTRIBUTION
                    lr = trial.suggest_float("lr", d.low, d.high, log=True)
                settings = {
                    name: trial.suggest_float(
                        name, TUNABLE[name][0], TUNABLE[name][1], log=TUNABLE[name][2]
                    )
                    for name in (group.extra if phase == "tune" else dict(item.params))
                }
            method = group.method
            if settings:
                method = dataclasses.replace(method, kwargs={**method.kwargs, **settings})
            reports: dict[str, float] = {}
            reporter = None
            if phase == "tune":
                reporter = _reporter(
                    trial if config.pruner != "none" else None, config.n_evals, reports
                )
            result = run_trial(
                group.task,
                method,
                lr,
                item.seed,
                group.steps,
                n_evals=config.n_evals,
                subsample=config.subsample,
                report=reporter,
                final=(phase == "final"),
            )
            with deferred_sigint():
                objective = result["objective"]
                result = results_io.compact({**result, "reports": reports}, phase)
                record = {
                    "task": group.task.name,
                    "method": group.method.name,
                    "phase": phase,
                    "lr": lr,
                    "seed": item.seed,
                    "key": item.key,
                    "study": study.study_name,
                    "trial_number": trial.number,
                    **result,
                }
                results_io.write_trial_file(Path(config.out), record)
                trial.set_user_attr("result", result)
                if result["state"] == "pruned":
                    study.tell(trial, state=TrialState.PRUNED)
                else:
                    study.tell(trial, objective)
                if on_event is not None:
                    on_event({"type": "done", **{k: v for k, v in record.items() if k != "curves"}})
        except KeyboardInterrupt:
            with deferred_sigint(), contextlib.suppress(Exception):
                study.tell(trial, state=TrialState.FAIL)  # a finished trial stays finished
            raise
        except Exception as exc:
            if is_environment_error(exc):
                # The machine failed, not the trial: leave it FAILED without an error record,
                # so that the next run of the same command retries it.
                with contextlib.suppress(Exception):
                    study.tell(trial, state=TrialState.FAIL)
                raise RunError(
                    f"{describe_environment_error(exc)} (in trial {group.label} {phase} "
                    f"seed={item.seed}); fix that, then run the same command again to resume: "
                    "the trial will be retried"
                ) from exc
            message = f"{type(exc).__name__}: {exc}"
            with contextlib.suppress(Exception):
                trial.set_user_attr("error", message)
                study.tell(trial, state=TrialState.FAIL)
            if on_event is not None:
                on_event(
                    {
                        "type": "error",
                        "task": group.task.name,
                        "method": group.method.name,
                        "phase": phase,
                        "seed": item.seed,
                        "error": message,
                    }
                )
        finally:
            if heartbeat is not None:
                heartbeat.stop()


def rungs(n_evals: int) -> list[int]:
    """The evaluation points at which tuning trials report: the pruner's rungs
    (``min_resource * 3**k``) and the last point. Every trial that is still running at a rung
    has a value there, so trials can be compared at equal fidelity."""
    min_resource = max(1, n_evals // 9)
    found = set()
    r = min_resource
    while r < n_evals:
        found.add(r)
        r *= 3
    found.add(n_evals)
    return sorted(found)


def _reporter(
    trial: optuna.trial.Trial | None, n_evals: int, record: dict[str, float]
) -> Callable[[int, float], bool]:
    """Record the value at each rung (and report it to Optuna, which prunes, when ``trial`` is
    given): each report is a database write, and the pruner looks at no other point."""
    at = set(rungs(n_evals))

    def report(index: int, value: float) -> bool:
        if index not in at:
            return False
        record[str(index)] = value if math.isfinite(value) else None
        if trial is None:
            return False
        with deferred_sigint():
            trial.report(value if math.isfinite(value) else float("inf"), index)
            return trial.should_prune()

    return report


def work(
    ctx: Context,
    on_event: EventFn | None = None,
    *,
    poll_s: float = 0.5,
    parent_pid: int | None = None,
) -> None:
    """Claim and run trials until every phase is done (waiting for other processes' trials)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for phase in ctx.phases:
            ctx.recover(phase)
            while True:
                if parent_pid is not None and os.getppid() != parent_pid:
                    return  # the coordinator is gone: stop taking work
                with deferred_sigint():
                    claimed, all_done = ctx.claim(phase)
                if claimed is not None:
                    ctx.execute(claimed, on_event)
                    continue
                if all_done:
                    break
                if ctx.recover(phase) == 0:
                    time.sleep(poll_s)
    finally:
        torch.set_num_threads(threads)
