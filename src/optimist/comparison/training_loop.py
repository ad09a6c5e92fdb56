"""One trial: train one method at one learning rate with one seed, and record its curves.

A data task trains through :meth:`optimist.training.Model.fit`, the same step loop as every
``fit`` (batching, shuffling, evaluation, NaN detection, callbacks), with a callback that
evaluates at ``n_evals`` evenly spaced steps (training and validation loss on fixed subsets of
``eval_size`` examples), prunes and stops at the step budget. A 2-D function has no data and no
model: its loop applies the optimizer to the function's gradient directly.

Every random choice (initial weights, data order, gradient noise) is drawn from generators
seeded by :func:`derive_seed` from the task name and the seed index only, so all methods and
learning rates of one seed start from the same weights and see the same examples in the same
order (common random numbers), and a trial gives the same numbers in any process.

A trial *diverges* when a loss becomes NaN or infinite, or exceeds ``1e6`` times its initial
value; it stops there and is recorded with ``state = "diverged"``.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable
from typing import Any

import torch

from optimist.comparison.health import TrialMonitor
from optimist.comparison.methods import Method, evaluation_weights
from optimist.comparison.tasks import DataTask, FunctionTask, Task
from optimist.training import Callback, Model, losses

__all__ = ["DIVERGENCE_FACTOR", "derive_seed", "eval_steps", "run_trial"]

DIVERGENCE_FACTOR = 1e6
GAP_FLOOR = 1e-12
"""Gaps below this count as reaching the minimum (float64 rounding makes smaller ones noise)."""
MAX_CURVE_POINTS = 250
"""Function-task curves are recorded every step and thinned to at most this many points."""

Reporter = Callable[[int, float], bool]
"""``report(eval_index, val_loss) -> prune?``: called at each evaluation point."""


def derive_seed(*parts: Any) -> int:
    """A 63-bit seed from ``parts`` (stable across processes and Python versions)."""
    text = "\x1f".join(str(p) for p in parts).encode()
    return int.from_bytes(hashlib.sha256(text).digest()[:8], "little") >> 1


def eval_steps(total_steps: int, n_evals: int) -> list[int]:
    """The ``n_evals`` (or fewer) evenly spaced steps in ``1..total_steps``, last included."""
    n = max(1, min(n_evals, total_steps))
    return sorted({max(1, round(total_steps * (i + 1) / n)) for i in range(n)})


def _is_bad(value: float, initial: float) -> bool:
    return not math.isfinite(value) or value > DIVERGENCE_FACTOR * max(abs(initial), 1e-12)


def run_trial(
    task: Task,
    method: Method,
    lr: float,
    seed: Any,
    total_steps: int,
    *,
    n_evals: int = 40,
    subsample: int | None = None,
    report: Reporter | None = None,
    final: bool = True,
    monitor: bool | None = None,
) -> dict[str, Any]:
    """Run one trial; returns ``{"state", "objective", "curves", "final", "trajectory",
    "monitor"}``.

    ``state`` is ``"complete"``, ``"pruned"`` (``report`` asked to stop) or ``"diverged"``;
    ``objective`` is what the tuner minimizes (``inf`` when diverged): the last validation loss
    on a data task; on a 2-D function, the mean of ``log10(max(gap, 1e-12))`` over the evaluation
    points, so a learning rate that gets close sooner wins. ``report`` receives the same
    quantity as it stands at each evaluation point.
    ``final`` also scores the whole validation set and the test set at the end.
    ``monitor`` (default: ``final``) watches the run with the training monitor
    (:mod:`optimist.comparison.health`); ``"monitor"`` is then its verdicts and signals, else None.
    """
    if total_steps < 1:
        raise ValueError(f"total_steps must be >= 1, got {total_steps}")
    watched = final if monitor is None else monitor
    if isinstance(task, FunctionTask):
        return _function_trial(task, method, lr, seed, total_steps, n_evals, report, watched)
    if isinstance(task, DataTask):
        return _data_trial(
            task, method, lr, seed, total_steps, n_evals, subsample, report, final, watched
        )
    raise TypeError(f"unsupported task type {type(task).__name__}")


def _thin(n: int, limit: int = MAX_CURVE_POINTS) -> list[int]:
    """Indices ``0..n-1`` thinned to at most ``limit``, first and last kept."""
    if n <= limit:
        return list(range(n))
    return sorted({round(i * (n - 1) / (limit - 1)) for i in range(limit)})


def _function_trial(
    task: FunctionTask,
    method: Method,
    lr: float,
    seed: Any,
    total_steps: int,
    n_evals: int,
    report: Reporter | None,
    watched: bool,
) -> dict[str, Any]:
    f = task.function
    p = torch.tensor(f.start, dtype=torch.float64)
    opt = method.build([p], lr, total_steps)
    monitor = TrialMonitor(None, opt, total_steps) if watched else None
    sigma = method.noise_scale(f.noise)
    noise = None
    if sigma > 0:
        gen = torch.Generator().manual_seed(derive_seed(task.name, seed, "noise"))
        noise = (torch.randn(total_steps, 2, generator=gen, dtype=torch.float64) * sigma).tolist()
    x, y = at = f.start  # (x, y): the weights evaluated; at: where the gradient is taken
    initial = f.gap(x, y)
    if monitor is not None:
        monitor.loss(initial, reading=True)
    log_gaps: list[float] = []
    steps, gaps, times, path = [0], [initial], [0.0], [[x, y]]
    checkpoints = set(eval_steps(total_steps, n_evals))
    state = "complete"
    # The first step from which the gap stays within the target to the end: a run that got
    # there and left again has not reached it.
    steps_to_target = 0 if initial <= task.target_gap else None
    elapsed = 0.0
    t0 = time.perf_counter()
    eval_index = 0
    for step in range(1, total_steps + 1):
        gx, gy = f.gradient(*at)
        if noise is not None:
            gx, gy = gx + noise[step - 1][0], gy + noise[step - 1][1]
        p.grad = torch.tensor((gx, gy), dtype=torch.float64)
        opt.step()
        at = p.tolist()
        with evaluation_weights(opt):  # Schedule-Free: its average, not the gradient point
            x, y = p.tolist()
        gap = f.gap(x, y) if math.isfinite(x) and math.isfinite(y) else math.inf
        if monitor is not None:
            monitor.loss(gap)
        now = time.perf_counter()
        elapsed += now - t0
        t0 = now
        steps.append(step)
        times.append(elapsed)
        if _is_bad(gap, initial) or max(abs(x), abs(y)) > 1e6:
            gaps.append(gap if math.isfinite(gap) else math.inf)
            path.append([x, y] if math.isfinite(x) and math.isfinite(y) else path[-1])
            state = "diverged"
            break
        gaps.append(gap)
        path.append([x, y])
        if gap > task.target_gap:
            steps_to_target = None
        elif steps_to_target is None:
            steps_to_target = step
        if step in checkpoints:
            eval_index += 1
            log_gaps.append(math.log10(max(gap, GAP_FLOOR)))
            if report is not None and report(eval_index, sum(log_gaps) / len(log_gaps)):
                state = "pruned"
                break
            t0 = time.perf_counter()
    keep = _thin(len(steps))
    last_gap = gaps[-1]
    final = {
        "train_loss": last_gap,
        "val_loss": last_gap,
        "val_acc": None,
        "test_loss": None,
        "test_acc": None,
        "steps": steps[-1],
        "epochs": None,
        "time_s": times[-1],
        "steps_per_s": steps[-1] / times[-1] if times[-1] > 0 else None,
        "batch_size": None,
        "examples_per_s": None,
        "steps_to_target": steps_to_target if last_gap <= task.target_gap else None,
        "time_to_target_s": None if steps_to_target is None else times[steps_to_target],
        "epochs_to_target": None,
        "best_val_loss": min(gaps),
    }
    if not log_gaps:
        log_gaps.append(math.log10(max(last_gap, GAP_FLOOR)))
    return {
        "state": state,
        "objective": math.inf if state == "diverged" else sum(log_gaps) / len(log_gaps),
        "curves": {
            "step": [steps[i] for i in keep],
            "epoch": None,
            "time_s": [times[i] for i in keep],
            "train_loss": [gaps[i] for i in keep],
            "val_loss": [gaps[i] for i in keep],
            "val_acc": None,
        },
        "final": final,
        "trajectory": [path[i] for i in keep],
        "monitor": monitor.result() if monitor is not None else None,
    }


def _loss(task: DataTask) -> Any:
    """The task's loss as an :mod:`optimist.training.losses` object (models output logits)."""
    if task.loss == "cross_entropy":
        return losses.SparseCategoricalCrossentropy(from_logits=True)
    if task.loss == "mse":
        return losses.MeanSquaredError()
    if callable(task.loss):
        user = task.loss
        return losses.CustomLoss(lambda y_true, y_pred: user(y_pred, y_true))  # torch order
    raise ValueError(f"unknown loss {task.loss!r}; use 'cross_entropy', 'mse' or a callable")


class _Trial(Callback):
    """A ``fit`` callback that runs one trial's bookkeeping: evaluation at the ``n_evals``
    evenly spaced steps (timed out of the training time), the curves (training loss: the mean
    of the batch losses since the previous point, from ``fit``'s logs; validation loss and
    accuracy: ``evaluate`` on a fixed subset), divergence (a loss above ``DIVERGENCE_FACTOR``
    times its start), the target, pruning through ``report``, and the step budget (it stops
    ``fit`` when the budget is spent)."""

    def __init__(
        self, model, task, data, total_steps, n_evals, per_epoch, report, watched=False
    ) -> None:
        super().__init__()
        self.watched = watched
        self.monitor: TrialMonitor | None = None
        self.model = model
        self.task = task
        self.x_eval, self.y_eval = data.x_val[: task.eval_size], data.y_val[: task.eval_size]
        self.x_fit, self.y_fit = data.x_train[: task.eval_size], data.y_train[: task.eval_size]
        self.total = total_steps
        self.n_train = len(data.y_train)
        self.batch_size = 1
        self.interval_sum, self.interval_seen = 0.0, 0
        self.epoch_sum, self.epoch_seen = 0.0, 0
        self.checkpoints = eval_steps(total_steps, n_evals)
        self.per_epoch = per_epoch
        self.report = report
        self.step = 0
        self.next = 0
        self.elapsed = 0.0
        self.t0 = 0.0
        self.state = "complete"
        self.val0, acc0 = self.evaluate(self.x_eval, self.y_eval)
        self.train0, _ = self.evaluate(self.x_fit, self.y_fit)
        cls = task.classification
        self.curves: dict[str, Any] = {
            "step": [0],
            "epoch": [0.0],
            "time_s": [0.0],
            "train_loss": [self.train0],
            "val_loss": [self.val0],
            "val_acc": [acc0] if cls else None,
        }
        self.hit = 0 if self.reached(self.val0, acc0) else None

    def evaluate(self, x, y) -> tuple[float, float | None]:
        """Loss (and accuracy) through the model's own ``evaluate``."""
        with evaluation_weights(self.model.optimizer):  # Schedule-Free: its average
            logs = self.model.evaluate(x, y, batch_size=8192, verbose=0, return_dict=True)
        loss = float(logs["loss"])
        return (loss if math.isfinite(loss) else math.inf), logs.get("accuracy")

    def reached(self, loss: float, acc: float | None) -> bool:
        target = self.task.target
        value = acc if target["metric"] == "val_acc" else loss
        if value is None:
            return False
        if target["mode"] == "above":
            return value >= target["threshold"]
        return value <= target["threshold"]

    def on_train_begin(self, logs=None) -> None:
        if self.watched and self.monitor is None:
            self.monitor = TrialMonitor(self.model, self.model.optimizer, self.total)
            self.monitor.loss(self.train0, reading=True)
            self.monitor.val_loss(self.val0)
        self.t0 = time.perf_counter()

    def on_train_batch_end(self, batch: int, logs=None) -> None:
        self.step += 1
        # fit's logs hold the epoch's running mean loss: keep the sum over the interval since
        # the last evaluation point (the training-loss curve is that interval's mean)
        seen = min((batch + 1) * self.batch_size, self.n_train)
        total = float(logs["loss"]) * seen if logs else math.nan
        if batch == 0:
            self.epoch_sum, self.epoch_seen = 0.0, 0
        self.interval_sum += total - self.epoch_sum
        self.interval_seen += seen - self.epoch_seen
        self.epoch_sum, self.epoch_seen = total, seen
        if self.step >= self.total:
            self.model.stop_training = True
        if self.next >= len(self.checkpoints) or self.step != self.checkpoints[self.next]:
            return
        self.elapsed += time.perf_counter() - self.t0
        self.record()
        self.t0 = time.perf_counter()

    def record(self) -> None:
        """Evaluate at the current step and decide: go on, diverged, or pruned."""
        train_loss = self.interval_sum / max(self.interval_seen, 1)
        if not math.isfinite(train_loss):
            train_loss = math.inf
        self.interval_sum, self.interval_seen = 0.0, 0
        val_loss, val_acc = self.evaluate(self.x_eval, self.y_eval)
        c = self.curves
        c["step"].append(self.step)
        c["epoch"].append(self.step / self.per_epoch)
        c["time_s"].append(self.elapsed)
        c["train_loss"].append(train_loss)
        c["val_loss"].append(val_loss)
        if c["val_acc"] is not None:
            c["val_acc"].append(val_acc)
        if self.monitor is not None:
            self.monitor.loss(train_loss, reading=True)
            self.monitor.val_loss(val_loss)
        self.next += 1
        if _is_bad(train_loss, self.train0) or _is_bad(val_loss, self.val0):
            self.state = "diverged"
            self.model.stop_training = True
            return
        if not self.reached(val_loss, val_acc):
            self.hit = None  # reached and left again: not reached (yet)
        elif self.hit is None:
            self.hit = len(c["step"]) - 1
        if self.report is not None and self.report(self.next, val_loss):
            self.state = "pruned"
            self.model.stop_training = True


def _data_trial(
    task: DataTask,
    method: Method,
    lr: float,
    seed: Any,
    total_steps: int,
    n_evals: int,
    subsample: int | None,
    report: Reporter | None,
    final: bool,
    watched: bool,
) -> dict[str, Any]:
    """Train through :meth:`optimist.training.Model.fit` (the same step loop, batching,
    evaluation and NaN detection as every ``fit``), with :class:`_Trial` as its callback."""
    data = task.data(subsample)
    cls = task.classification
    torch.manual_seed(derive_seed(task.name, seed, "init"))
    model = Model(task.model_fn())
    # compile seeds fit's shuffle generator from torch.initial_seed(): the data order's seed
    torch.manual_seed(derive_seed(task.name, seed, "order"))
    model.compile(
        optimizer=lambda params: method.build(params, lr, total_steps),
        loss=_loss(task),
        metrics=["accuracy"] if cls else None,
    )
    x, y = data.x_train, data.y_train
    n = len(y)
    bs = method.batch_size(n)
    per_epoch = math.ceil(n / bs)
    trial = _Trial(model, task, data, total_steps, n_evals, per_epoch, report, watched)
    trial.batch_size = bs
    try:
        model.fit(
            x,
            y,
            batch_size=bs,
            epochs=math.ceil(total_steps / per_epoch),
            shuffle=bs < n,
            verbose=0,
            callbacks=[trial],
            monitor=False,  # the trial's own monitor (fixed interval, no warnings) if any
        )
    except FloatingPointError:  # fit's NaN check: the loss became NaN or infinite
        trial.state = "diverged"
        trial.elapsed += time.perf_counter() - trial.t0
        if trial.curves["step"][-1] != trial.step:
            trial.record()
            trial.state = "diverged"
    curves, hit, elapsed = trial.curves, trial.hit, trial.elapsed
    state = trial.state
    steps_run = curves["step"][-1]
    result_final: dict[str, Any] = {
        "train_loss": curves["train_loss"][-1],
        "val_loss": curves["val_loss"][-1],
        "val_acc": curves["val_acc"][-1] if cls else None,
        "test_loss": None,
        "test_acc": None,
        "steps": steps_run,
        "epochs": steps_run / per_epoch,
        "time_s": elapsed,
        "steps_per_s": steps_run / elapsed if elapsed > 0 else None,
        "batch_size": bs,
        "examples_per_s": steps_run * bs / elapsed if elapsed > 0 else None,
        "steps_to_target": None if hit is None else curves["step"][hit],
        "time_to_target_s": None if hit is None else curves["time_s"][hit],
        "epochs_to_target": None if hit is None else curves["epoch"][hit],
        "best_val_loss": min(curves["val_loss"]),
    }
    if final and state == "complete":
        result_final["val_loss"], result_final["val_acc"] = trial.evaluate(data.x_val, data.y_val)
        if data.x_test is not None and data.y_test is not None and len(data.y_test):
            result_final["test_loss"], result_final["test_acc"] = trial.evaluate(
                data.x_test, data.y_test
            )
        if not trial.reached(result_final["val_loss"], result_final["val_acc"]):
            # On the whole validation set the run ends short of the target.
            for key in ("steps_to_target", "time_to_target_s", "epochs_to_target"):
                result_final[key] = None
    return {
        "state": state,
        "objective": math.inf if state == "diverged" else curves["val_loss"][-1],
        "curves": curves,
        "final": result_final,
        "trajectory": None,
        "monitor": trial.monitor.result() if trial.monitor is not None else None,
    }
