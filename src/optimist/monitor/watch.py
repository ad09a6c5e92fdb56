"""``watch(model, optimizer)``: the monitor for plain PyTorch loops, and the ``Monitor`` callback.

>>> with optimist.monitor.watch(model, optimizer) as m:          # doctest: +SKIP
...     for x, y in data:
...         loss = loss_fn(model(x), y)
...         optimizer.zero_grad(); loss.backward(); optimizer.step()
...         m.log_loss(loss)
>>> for v in m.verdicts(): print(v)                               # doctest: +SKIP
"""

from __future__ import annotations

import os
import warnings
from typing import Any

import torch
from torch import nn

from optimist.monitor.signals import AUTO_MAX, Record, SignalCollector, clock
from optimist.monitor.signals import sharpness as _sharpness
from optimist.monitor.sinks import CSVSink, LogWriter, Sink, TensorBoardSink
from optimist.monitor.verdicts import Diagnoser, Thresholds, Verdict, health

DEFAULT_EVERY: int | str = "auto"
LOSS_BUDGET = 0.005  # every="auto": loss readings double their interval above this share


class MonitorWarning(UserWarning):
    """A verdict other than *healthy*, raised once per verdict (and layer) of a run."""


def _check_loss(loss: Any) -> torch.Tensor | float:
    """A scalar loss as a float (CPU: no sync to wait for) or a detached tensor (other devices:
    read later, with the other losses of the interval, in one transfer)."""
    if isinstance(loss, torch.Tensor):
        if loss.numel() != 1:
            raise ValueError(
                f"log_loss expects a scalar loss, got a tensor of shape {tuple(loss.shape)}"
            )
        return loss.item() if loss.is_cpu else loss.detach()
    try:
        return float(loss)
    except (TypeError, ValueError):
        raise ValueError(f"log_loss expects a number or a scalar tensor, got {loss!r}") from None


def _mean_loss(items: list[torch.Tensor | float]) -> float:
    tensors = [t for t in items if isinstance(t, torch.Tensor)]
    total = sum(t for t in items if not isinstance(t, torch.Tensor))
    if tensors:  # one op and one host transfer for the whole interval
        total += float(torch.stack(tensors).sum(dtype=torch.float64))
    return total / len(items)


class Watch:
    """Monitors one model/optimizer pair; use :func:`watch` (a context manager) to make one.

    Signals are read every ``every`` optimizer steps (see :mod:`optimist.monitor.signals`);
    ``every="auto"`` (the default) starts at 10 and doubles the interval (up to 1000) while a
    reading costs more than 1% of the time since the previous one (CPU time of the training
    thread, :data:`optimist.monitor.signals.clock`), so it stays cheap on tiny models too; the
    loss is then read every 10 steps (:attr:`loss_every`), with its own 0.5% budget, so the loss
    verdicts keep their delay while the gradient signals thin out;
    :meth:`log_loss` (each step) and :meth:`log_val_loss` (after each evaluation) add the losses
    the loss-based verdicts need. ``log``: a JSON-lines monitor log path (read by ``optimist
    diagnose``); ``csv``: a CSV path; ``tensorboard``: a TensorBoard run folder. ``warn=True``
    issues a :class:`MonitorWarning` the first time each verdict holds. ``full``: also read the
    optimizer-state signals (effective LR, momentum norm, second-moment range), which no verdict
    needs and which cost about half of a reading; the default (``None``) reads them only when a
    log, CSV or TensorBoard output is written, so the light mode (nothing written) stays cheap.
    """

    def __init__(
        self,
        model: nn.Module | None,
        optimizer: torch.optim.Optimizer,
        *,
        every: int | str = DEFAULT_EVERY,
        log: str | os.PathLike[str] | None = None,
        csv: str | os.PathLike[str] | None = None,
        tensorboard: str | os.PathLike[str] | None = None,
        thresholds: Thresholds | None = None,
        warn: bool = False,
        full: bool | None = None,
    ) -> None:
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(f"watch needs a torch.optim.Optimizer, got {type(optimizer).__name__}")
        self.warn = warn
        self.records: list[Record] = []
        self._sinks: list[Sink] = []
        self._losses: list[torch.Tensor | float] = []
        self._first_loss = True
        self._closed = False
        # every="auto": the loss is read every AUTO_START steps under its own budget, whatever
        # the signal interval; the loss verdicts (stalled: 10 readings) keep their delay
        self._auto_loss = every == "auto"
        self.loss_budget = LOSS_BUDGET
        self._loss_since = clock()
        self._loss_time = 0.0
        if full is None:
            full = any(out is not None for out in (log, csv, tensorboard))
        self._collector = SignalCollector(model, optimizer, self._emit, every, full=full)
        self._loss_every = self._collector.every  # AUTO_START with "auto", else fixed
        self.diagnoser = Diagnoser(thresholds, self._collector.layer_sizes)
        try:
            if log is not None:
                header = {
                    "every": every,
                    "optimizer": type(optimizer).__name__,
                    "layer_sizes": self._collector.layer_sizes,
                }
                self._sinks.append(LogWriter(log, header))
            if csv is not None:
                self._sinks.append(CSVSink(csv))
            if tensorboard is not None:
                self._sinks.append(TensorBoardSink(tensorboard))
        except BaseException:
            self.close()
            raise

    # ---- inputs ------------------------------------------------------------------------------
    @property
    def every(self) -> int:
        """The current interval between sampled steps (``every="auto"`` widens it as needed)."""
        return self._collector.every

    @property
    def step(self) -> int:
        """Optimizer steps taken since the watch began (between readings of a loop that calls
        :meth:`log_loss` after each step, counted by those calls)."""
        return self._collector.step

    @property
    def own_time(self) -> float:
        """Seconds (CPU time of the training thread) the monitor spent on its readings so far
        (signals, losses, rules); the counter of each unsampled step's hook is not counted."""
        return self._collector.spent + self._collector._cost + self._loss_time

    @property
    def loss_every(self) -> int:
        """Steps per loss reading: ``every``, or with ``every="auto"`` its own interval (10,
        doubled only while loss readings cost over 0.5% of the time between two of them)."""
        return self._loss_every

    def log_loss(self, loss: Any, *, reading: bool = False) -> None:
        """The training loss of the latest step; averaged over :attr:`loss_every` steps per
        reading (one host transfer per reading). Called once per step after ``step()``, it also
        counts the steps, so the optimizer's post-step hook comes off between readings (see
        :class:`~optimist.monitor.signals.SignalCollector`). ``reading=True`` makes it (with any
        losses still pending) a reading now: for a loss that is already a mean over an interval,
        e.g. an epoch's; such a call counts no step."""
        losses = self._losses
        if type(loss) is torch.Tensor and loss.is_cpu:  # the usual case, in as few calls as can be
            try:
                losses.append(loss.item())
            except RuntimeError:  # not one element: the clear error
                losses.append(_check_loss(loss))
        else:
            losses.append(_check_loss(loss))
        if not reading:  # a step's loss: it may count the step (see SignalCollector.on_loss)
            self._collector.on_loss()
        # the first loss is a reading of its own: the reference the divergence rule compares with
        if reading or self._first_loss:
            self._first_loss = False
            self._flush_loss()
        elif len(losses) >= self._loss_every:
            self._flush_loss(adapt=True)  # a full interval: its cost may widen the next one

    def log_val_loss(self, loss: Any) -> None:
        """A validation loss (for the *overfitting* verdict); one reading per call."""
        self._flush_loss()
        self._emit({"step": self.step, "val_loss": float(_check_loss(loss))})

    def sharpness(self, closure: Any, iters: int = 5) -> float:
        """Opt-in: the top Hessian eigenvalue of ``closure()`` (see
        :func:`optimist.monitor.signals.sharpness`), recorded as the ``sharpness`` signal."""
        model = self._model_for_sharpness()
        value = _sharpness(model, closure, iters)
        self._emit({"step": self.step, "sharpness": value})
        return value

    def _model_for_sharpness(self) -> nn.Module:
        params = self._collector.params

        class _Params(nn.Module):
            def parameters(self, recurse: bool = True):  # type: ignore[override]
                return iter(params)

        return _Params()

    # ---- outputs -----------------------------------------------------------------------------
    def verdicts(self) -> list[Verdict]:
        """Verdicts so far (``[healthy]`` when no rule fired)."""
        self._flush_loss()
        return self.diagnoser.verdicts()

    def health(self) -> tuple[str, list[str]]:
        """``(word, verdict names)`` for a report column; see :func:`optimist.monitor.health`."""
        return health(self.verdicts())

    @property
    def series(self) -> dict[str, list[tuple[int, float]]]:
        """Every signal as ``[(step, value), ...]``."""
        return self.diagnoser.series

    def close(self) -> None:
        """Removes the hooks and flushes the log/CSV/TensorBoard (idempotent)."""
        if self._closed:
            return
        self._flush_loss()
        self._closed = True
        self._collector.close()
        for sink in self._sinks:
            sink.close()

    def __enter__(self) -> Watch:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ---- internals ---------------------------------------------------------------------------
    def _flush_loss(self, adapt: bool = False) -> None:
        if not self._losses or self._closed:
            return
        start = clock()
        mean = _mean_loss(self._losses)
        self._losses = []
        self._emit({"step": self.step, "loss": mean})
        now = clock()
        self._loss_time += now - start
        if self._auto_loss:
            if adapt and now - start > self.loss_budget * (now - self._loss_since):
                self._loss_every = min(self._loss_every * 2, AUTO_MAX)
            self._loss_since = now

    def _emit(self, record: Record) -> None:
        if self._closed:
            return
        self.records.append(record)
        for verdict in self.diagnoser.add(record):
            if self.warn:
                warnings.warn(f"optimist monitor: {verdict}", MonitorWarning, stacklevel=3)
        for sink in self._sinks:
            sink.write(record)


def watch(model: nn.Module | None, optimizer: torch.optim.Optimizer, **kwargs: Any) -> Watch:
    """Starts monitoring ``optimizer`` (and ``model``'s ReLU layers); see :class:`Watch`.

    Use it as a context manager (the hooks come off at the end) or call ``close()``.
    """
    return Watch(model, optimizer, **kwargs)


class Monitor:
    """The monitor as a ``fit`` callback (duck-typed to ``optimist.callbacks.Callback``).

    ``fit`` adds ``Monitor()`` by default: light mode, which reads the gradient-side signals
    every ``every`` steps (not the optimizer-state ones unless a log/CSV/TensorBoard output is
    given, see :class:`Watch`'s ``full``), the epoch losses (``loss``, ``val_loss``) from the
    epoch logs, and warns once per verdict. It adds no host sync per batch, and no per-batch
    callback call once the model is built. Pass your own
    ``Monitor(log=..., csv=..., tensorboard=...)`` in ``callbacks`` to keep a log, or
    ``fit(..., monitor=False)`` to turn it off. After training, ``monitor.verdicts()``.
    """

    def __init__(
        self,
        *,
        every: int | str = DEFAULT_EVERY,
        log: str | os.PathLike[str] | None = None,
        csv: str | os.PathLike[str] | None = None,
        tensorboard: str | os.PathLike[str] | None = None,
        thresholds: Thresholds | None = None,
        warn: bool = True,
        full: bool | None = None,
    ) -> None:
        self.model: Any = None
        self.params: dict[str, Any] = {}
        self.watch: Watch | None = None
        self._kwargs = dict(
            every=every,
            log=log,
            csv=csv,
            tensorboard=tensorboard,
            thresholds=thresholds,
            warn=warn,
            full=full,
        )

    def set_model(self, model: Any) -> None:
        self.model = model
        # fit calls a per-batch hook only if some callback has it: the monitor has one only for
        # a model still to be built, whose optimizer comes with its first batch
        if isinstance(getattr(model, "optimizer", None), torch.optim.Optimizer):
            self.__dict__.pop("on_train_batch_begin", None)
        else:
            self.on_train_batch_begin = self._attach_on_batch

    def set_params(self, params: dict[str, Any]) -> None:
        self.params = params

    def _attach(self) -> None:
        optimizer = getattr(self.model, "optimizer", None)
        if self.watch is None and isinstance(optimizer, torch.optim.Optimizer):
            module = self.model if isinstance(self.model, nn.Module) else None
            self.watch = Watch(module, optimizer, **self._kwargs)

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        if self.watch is not None:
            self.watch.close()
            self.watch = None
        self._attach()

    def _attach_on_batch(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        if self.watch is None:  # a model built on its first batch has its optimizer only now
            self._attach()

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if self.watch is None or not logs:
            return
        if "loss" in logs:
            self.watch.log_loss(logs["loss"], reading=True)
        if "val_loss" in logs:
            self.watch.log_val_loss(logs["val_loss"])

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        if self.watch is not None:
            self.watch.close()

    def verdicts(self) -> list[Verdict]:
        """The verdicts of the latest ``fit`` (``[]`` before any)."""
        return self.watch.verdicts() if self.watch is not None else []
