"""Keras-style callbacks: hooks into ``fit``, ``evaluate`` and ``predict``.

Subclass :class:`Callback` and override any hook; ``self.model`` is the model being trained and
``self.params`` holds ``epochs``, ``steps`` and ``verbose``. Set ``self.model.stop_training =
True`` to stop after the current batch. Batch hooks receive running-average logs; defining one
makes ``fit`` read the loss each batch (one host sync per batch), so the built-in callbacks use
epoch hooks only, except :class:`TerminateOnNaN`. :class:`Callback` and :class:`CallbackList`
(which calls the hooks) live in :mod:`optimist.training.callback_base`; :class:`History`, which
``fit`` returns, in :mod:`optimist.training.history`.
"""

from __future__ import annotations

import contextlib
import csv
import inspect
import math
import os
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from optimist.training.callback_base import Callback, CallbackList, Logs
from optimist.training.history import History

__all__ = [
    "BackupAndRestore",
    "CSVLogger",
    "Callback",
    "CallbackList",
    "EarlyStopping",
    "History",
    "LambdaCallback",
    "LearningRateScheduler",
    "ModelCheckpoint",
    "ReduceLROnPlateau",
    "TerminateOnNaN",
]


# -- helpers --------------------------------------------------------------------------------------
def _resolve_mode(mode: str, monitor: str) -> str:
    mode = str(mode).lower()
    if mode not in ("auto", "min", "max"):
        raise ValueError(f"mode must be 'auto', 'min' or 'max', got {mode!r}")
    if mode == "auto":
        maximize = ("acc", "auc", "precision", "recall", "f1")
        return "max" if any(word in monitor for word in maximize) else "min"
    return mode


def _better(mode: str, current: float, reference: float, min_delta: float) -> bool:
    if mode == "min":
        return current < reference - min_delta
    return current > reference + min_delta


def _missing(cb: Callback, monitor: str, logs: Logs | None) -> None:
    available = ", ".join(sorted(logs or {})) or "none"
    warnings.warn(
        f"{type(cb).__name__}: monitored quantity {monitor!r} is not in the logs (available: "
        f"{available}); skipping",
        RuntimeWarning,
        stacklevel=3,
    )


def _optimizer(cb: Callback) -> torch.optim.Optimizer:
    opt = getattr(cb.model, "optimizer", None)
    if opt is None:
        raise RuntimeError(f"{type(cb).__name__} needs a compiled model with an optimizer")
    return opt


def get_lr(optimizer: torch.optim.Optimizer) -> float:
    """The learning rate of the optimizer's first parameter group."""
    return float(optimizer.param_groups[0]["lr"])


def set_lr(optimizer: torch.optim.Optimizer, lr: float, group: int | None = None) -> None:
    """Set the learning rate of every parameter group (or of one)."""
    groups = optimizer.param_groups if group is None else [optimizer.param_groups[group]]
    for g in groups:
        if isinstance(g["lr"], torch.Tensor):
            g["lr"].fill_(lr)
        else:
            g["lr"] = lr


def _sub_optimizers(optimizer: torch.optim.Optimizer) -> list[Any]:
    """A MultiOptimizer's inner Keras-style optimizers, whose rates Keras 3's learning-rate
    callbacks set and log one by one (``learning_rate_<name>``); else ``[]``."""
    return list(getattr(getattr(optimizer, "keras_optimizer", None), "optimizers", None) or [])


def _log_lr(optimizer: torch.optim.Optimizer, logs: Logs) -> None:
    """``logs["learning_rate"]``, or a MultiOptimizer's ``learning_rate_<name>`` for each inner
    optimizer (Keras 3)."""
    subs = _sub_optimizers(optimizer)
    for sub in subs:
        logs[f"learning_rate_{sub.name}"] = float(sub.learning_rate)
    if not subs:
        logs["learning_rate"] = get_lr(optimizer)


def _print(msg: str) -> None:
    print(msg, file=sys.stdout, flush=True)


# -- built-in callbacks ---------------------------------------------------------------------------
class EarlyStopping(Callback):
    """Stop training when ``monitor`` has stopped improving.

    An epoch improves when the value beats the best so far by more than ``min_delta``. Training
    stops once ``patience`` epochs in a row have not improved (or, with ``baseline``, have not
    beaten the baseline). With ``restore_best_weights`` the weights of the best epoch are put
    back when stopping. Epochs before ``start_from_epoch`` are not considered.
    """

    def __init__(
        self,
        monitor: str = "val_loss",
        min_delta: float = 0.0,
        patience: int = 0,
        verbose: int = 0,
        mode: str = "auto",
        baseline: float | None = None,
        restore_best_weights: bool = False,
        start_from_epoch: int = 0,
    ) -> None:
        super().__init__()
        if patience < 0:
            raise ValueError(f"patience must be >= 0, got {patience}")
        self.monitor = monitor
        self.min_delta = abs(float(min_delta))
        self.patience = int(patience)
        self.verbose = verbose
        self.mode = _resolve_mode(mode, monitor)
        self.baseline = baseline
        self.restore_best_weights = bool(restore_best_weights)
        self.start_from_epoch = int(start_from_epoch)
        self.best_weights: dict[str, torch.Tensor] | None = None

    def on_train_begin(self, logs: Logs | None = None) -> None:
        self.wait = 0
        self.stopped_epoch = 0
        self.best = math.inf if self.mode == "min" else -math.inf
        self.best_epoch = 0
        self.best_weights = None

    def on_epoch_end(self, epoch: int, logs: Logs | None = None) -> None:
        current = (logs or {}).get(self.monitor)
        if current is None:
            _missing(self, self.monitor, logs)
            return
        if epoch < self.start_from_epoch:
            return
        current = float(current)
        if self.restore_best_weights and self.best_weights is None:
            self.best_weights = self.model._snapshot_weights()
        self.wait += 1
        if _better(self.mode, current, self.best, self.min_delta):
            self.best = current
            self.best_epoch = epoch
            if self.restore_best_weights:
                self.best_weights = self.model._snapshot_weights()
            if self.baseline is None or _better(self.mode, current, self.baseline, self.min_delta):
                self.wait = 0
                return
        if self.wait >= self.patience and epoch > 0:
            self.stopped_epoch = epoch
            self.model.stop_training = True
            if self.restore_best_weights and self.best_weights is not None:
                if self.verbose:
                    _print(f"Restoring model weights from the end of epoch {self.best_epoch + 1}.")
                self.model._restore_weights(self.best_weights)

    def on_train_end(self, logs: Logs | None = None) -> None:
        if self.stopped_epoch > 0 and self.verbose:
            _print(f"Epoch {self.stopped_epoch + 1}: early stopping")


class ModelCheckpoint(Callback):
    """Save the model (or only its weights) after every epoch, or only when ``monitor`` improves.

    ``filepath`` may hold ``str.format`` fields filled from ``epoch`` (1-based) and the logs, e.g.
    ``"ckpt/model-{epoch:02d}-{val_loss:.2f}.pt"``. A full save (the default) holds everything
    needed to resume training bit-exactly with :func:`optimist.load_model`; files are written
    atomically.
    """

    def __init__(
        self,
        filepath: str | os.PathLike[str],
        monitor: str = "val_loss",
        verbose: int = 0,
        save_best_only: bool = False,
        save_weights_only: bool = False,
        mode: str = "auto",
        save_freq: str = "epoch",
        initial_value_threshold: float | None = None,
    ) -> None:
        super().__init__()
        if save_freq != "epoch":
            raise ValueError("ModelCheckpoint supports save_freq='epoch' only")
        self.filepath = os.fspath(filepath)
        self.monitor = monitor
        self.verbose = verbose
        self.save_best_only = bool(save_best_only)
        self.save_weights_only = bool(save_weights_only)
        self.mode = _resolve_mode(mode, monitor)
        default_best = math.inf if self.mode == "min" else -math.inf
        self.best = default_best if initial_value_threshold is None else initial_value_threshold
        self.saved: list[str] = []

    def _path(self, epoch: int, logs: Logs) -> str:
        try:
            return self.filepath.format(epoch=epoch + 1, **logs)
        except KeyError as exc:
            raise ValueError(
                f"ModelCheckpoint filepath {self.filepath!r} uses {exc.args[0]!r}, which is not "
                f"in the logs (available: epoch, {', '.join(sorted(logs))})"
            ) from None

    def on_epoch_end(self, epoch: int, logs: Logs | None = None) -> None:
        logs = dict(logs or {})
        path = self._path(epoch, logs)
        if self.save_best_only:
            current = logs.get(self.monitor)
            if current is None:
                _missing(self, self.monitor, logs)
                return
            if not _better(self.mode, float(current), self.best, 0.0):
                if self.verbose:
                    _print(
                        f"Epoch {epoch + 1}: {self.monitor} did not improve from {self.best:.5f}"
                    )
                return
            if self.verbose:
                _print(
                    f"Epoch {epoch + 1}: {self.monitor} improved from {self.best:.5f} to "
                    f"{float(current):.5f}, saving model to {path}"
                )
            self.best = float(current)
        elif self.verbose:
            _print(f"Epoch {epoch + 1}: saving model to {path}")
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        if self.save_weights_only:
            self.model.save_weights(path)
        else:
            self.model.save(path)
        self.saved.append(path)


class BackupAndRestore(Callback):
    """Back up the training state, and resume from it when ``fit`` runs again after a crash.

    Keras 3's callback. At the end of every epoch (``save_freq="epoch"``) or every
    ``save_freq`` batches, ``backup_dir/latest.pt`` is written atomically with what
    ``model.save`` holds: weights, optimizer state, the epochs completed and the random states.
    When ``fit`` starts and that file exists, it is loaded into the model and ``fit`` runs on
    from the first unfinished epoch (``initial_epoch`` is overridden, the history holds the new
    epochs only). With ``save_freq="epoch"`` the resumed run ends bit-identical to an
    uninterrupted one; with batch backups, as in Keras, the interrupted epoch restarts from its
    first batch with the weights of the last backup. ``delete_checkpoint``: the folder is
    removed when ``fit`` ends normally (not when it raises, so the backup outlives a crash).
    The model must be built before ``fit`` when a backup is to be restored. Give every training
    run its own ``backup_dir``, and call ``fit`` with the same arguments when resuming.

    Under ``fit(strategy="ddp")`` every rank restores from ``backup_dir`` (one folder that all
    ranks read) and only rank 0 writes (``write`` is False on the others).
    """

    FILE = "latest.pt"

    def __init__(
        self,
        backup_dir: str | os.PathLike[str],
        save_freq: str | int = "epoch",
        delete_checkpoint: bool = True,
    ) -> None:
        super().__init__()
        if not backup_dir:
            raise ValueError(f"backup_dir must be a folder. Received: backup_dir={backup_dir!r}")
        if save_freq != "epoch" and (
            isinstance(save_freq, bool) or not isinstance(save_freq, int) or save_freq < 1
        ):
            raise ValueError(
                f"save_freq must be 'epoch' or a number of batches >= 1. Received: "
                f"save_freq={save_freq!r}"
            )
        self.backup_dir = Path(backup_dir)
        self.path = self.backup_dir / self.FILE
        self.save_freq = save_freq
        self.delete_checkpoint = bool(delete_checkpoint)
        self.write = True
        self._batches = 0

    def on_train_begin(self, logs: Logs | None = None) -> None:
        self._batches = 0
        if self.path.exists():
            self.model._initial_epoch = self.model._resume(self.path)

    def on_train_batch_end(self, batch: int, logs: Logs | None = None) -> None:
        if self.save_freq == "epoch":
            return
        self._batches += 1
        if self._batches >= self.save_freq:
            self._batches = 0
            self._save()

    def on_epoch_end(self, epoch: int, logs: Logs | None = None) -> None:
        if self.save_freq == "epoch":
            self._save()

    def _save(self) -> None:
        if self.write:
            self.model.save(self.path)  # atomic; model.epoch counts this epoch once it ended

    def on_train_end(self, logs: Logs | None = None) -> None:
        if self.write and self.delete_checkpoint and self.path.exists():
            self.path.unlink()
            with contextlib.suppress(OSError):  # only if nothing else lives there
                self.backup_dir.rmdir()


class LearningRateScheduler(Callback):
    """At the start of each epoch set every parameter group's learning rate to
    ``schedule(epoch, lr)`` (``epoch`` 0-based, ``lr`` the current rate of the first group);
    a one-argument ``schedule(epoch)`` also works. Logs ``learning_rate`` each epoch."""

    def __init__(self, schedule: Callable[..., float], verbose: int = 0) -> None:
        super().__init__()
        if not callable(schedule):
            raise ValueError("schedule must be callable: schedule(epoch, lr) -> new lr")
        self.schedule = schedule
        self.verbose = verbose
        try:
            n_args = len(inspect.signature(schedule).parameters)
        except (TypeError, ValueError):
            n_args = 2
        self._two_args = n_args >= 2

    def _next(self, epoch: int, lr: float) -> float:
        new = self.schedule(epoch, lr) if self._two_args else self.schedule(epoch)
        if isinstance(new, torch.Tensor):
            new = new.item()
        if not isinstance(new, (int, float)) or not math.isfinite(float(new)):
            raise ValueError(f"schedule must return a finite number, got {new!r} at epoch {epoch}")
        return float(new)

    def on_epoch_begin(self, epoch: int, logs: Logs | None = None) -> None:
        opt = _optimizer(self)
        subs = _sub_optimizers(opt)
        for sub in subs:  # a MultiOptimizer: each inner optimizer from its own rate (Keras 3)
            sub.learning_rate = new = self._next(epoch, float(sub.learning_rate))
            self._say(epoch, f"{sub.name} ", new)
        if not subs:
            new = self._next(epoch, get_lr(opt))
            set_lr(opt, new)
            self._say(epoch, "", new)

    def _say(self, epoch: int, who: str, lr: float) -> None:
        if self.verbose:
            _print(f"Epoch {epoch + 1}: LearningRateScheduler setting {who}learning rate to {lr}.")

    def on_epoch_end(self, epoch: int, logs: Logs | None = None) -> None:
        if logs is not None:
            _log_lr(_optimizer(self), logs)


class ReduceLROnPlateau(Callback):
    """Multiply every group's learning rate by ``factor`` (not below ``min_lr``) once
    ``monitor`` has not improved by more than ``min_delta`` for ``patience`` epochs, then wait
    ``cooldown`` epochs before counting again. Logs ``learning_rate`` each epoch."""

    def __init__(
        self,
        monitor: str = "val_loss",
        factor: float = 0.1,
        patience: int = 10,
        verbose: int = 0,
        mode: str = "auto",
        min_delta: float = 1e-4,
        cooldown: int = 0,
        min_lr: float = 0.0,
    ) -> None:
        super().__init__()
        if not 0.0 < factor < 1.0:
            raise ValueError(f"ReduceLROnPlateau factor must be in (0, 1), got {factor}")
        self.monitor = monitor
        self.factor = float(factor)
        self.patience = int(patience)
        self.verbose = verbose
        self.mode = _resolve_mode(mode, monitor)
        self.min_delta = abs(float(min_delta))
        self.cooldown = int(cooldown)
        self.min_lr = float(min_lr)
        self._reset()

    def _reset(self) -> None:
        self.best = math.inf if self.mode == "min" else -math.inf
        self.wait = 0
        self.cooldown_counter = 0

    def on_train_begin(self, logs: Logs | None = None) -> None:
        self._reset()

    def on_epoch_end(self, epoch: int, logs: Logs | None = None) -> None:
        opt = _optimizer(self)
        if logs is not None:
            _log_lr(opt, logs)
        current = (logs or {}).get(self.monitor)
        if current is None:
            _missing(self, self.monitor, logs)
            return
        current = float(current)
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.wait = 0
        if _better(self.mode, current, self.best, self.min_delta):
            self.best = current
            self.wait = 0
        elif self.cooldown_counter <= 0:
            self.wait += 1
            if self.wait >= self.patience:
                reduced = False
                for i, group in enumerate(opt.param_groups):
                    old = float(group["lr"])
                    if old > self.min_lr:
                        set_lr(opt, max(old * self.factor, self.min_lr), group=i)
                        reduced = True
                if reduced and self.verbose:
                    _print(
                        f"Epoch {epoch + 1}: ReduceLROnPlateau reducing learning rate to "
                        f"{get_lr(opt):.4g}."
                    )
                self.cooldown_counter = self.cooldown
                self.wait = 0


class CSVLogger(Callback):
    """Write one CSV row per epoch: ``epoch`` (0-based, as Keras) then the logs, keys sorted.

    With ``append=True`` rows are added to an existing file (its header is kept).
    """

    def __init__(
        self, filename: str | os.PathLike[str], separator: str = ",", append: bool = False
    ) -> None:
        super().__init__()
        self.filename = os.fspath(filename)
        self.separator = separator
        self.append = bool(append)
        self.keys: list[str] | None = None
        self._file: Any = None
        self._writer: Any = None

    def on_train_begin(self, logs: Logs | None = None) -> None:
        Path(self.filename).parent.mkdir(parents=True, exist_ok=True)
        has_header = self.append and os.path.exists(self.filename)
        has_header = has_header and os.path.getsize(self.filename) > 0
        self.keys = None
        if has_header:
            with open(self.filename, newline="") as fh:
                first = next(csv.reader(fh, delimiter=self.separator), None)
            if first and first[0] == "epoch":
                self.keys = first[1:]
        self._file = open(self.filename, "a" if self.append else "w", newline="")  # noqa: SIM115
        self._writer = csv.writer(self._file, delimiter=self.separator)

    def on_epoch_end(self, epoch: int, logs: Logs | None = None) -> None:
        logs = logs or {}
        if self.keys is None:
            self.keys = sorted(logs)
            self._writer.writerow(["epoch", *self.keys])
        row = [epoch] + [self._format(logs.get(k, "NA")) for k in self.keys]
        self._writer.writerow(row)
        self._file.flush()

    @staticmethod
    def _format(value: Any) -> Any:
        return repr(float(value)) if isinstance(value, float) else value

    def on_train_end(self, logs: Logs | None = None) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


class TerminateOnNaN(Callback):
    """Stop training as soon as the running loss becomes NaN or infinite (checked each batch)."""

    def __init__(self) -> None:
        super().__init__()
        self.terminated_at: tuple[int, int] | None = None
        self._epoch = 0

    def on_epoch_begin(self, epoch: int, logs: Logs | None = None) -> None:
        self._epoch = epoch

    def on_train_batch_end(self, batch: int, logs: Logs | None = None) -> None:
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(loss):
            self.terminated_at = (self._epoch, batch)
            _print(
                f"Epoch {self._epoch + 1}, batch {batch + 1}: invalid loss ({loss}), "
                f"terminating training"
            )
            self.model.stop_training = True


class LambdaCallback(Callback):
    """Callback from plain functions, e.g. ``LambdaCallback(on_epoch_end=lambda e, logs: ...)``."""

    _HOOKS = (
        "on_train_begin",
        "on_train_end",
        "on_epoch_begin",
        "on_epoch_end",
        "on_train_batch_begin",
        "on_train_batch_end",
    )

    def __init__(self, **hooks: Callable[..., Any]) -> None:
        super().__init__()
        unknown = set(hooks) - set(self._HOOKS)
        if unknown:
            raise ValueError(
                f"unknown LambdaCallback hooks {sorted(unknown)}; valid: {', '.join(self._HOOKS)}"
            )
        for name, fn in hooks.items():
            setattr(self, name, fn)
