"""The one training loop: ``Model.fit`` and its epoch loop ``_train_epoch``, which every ``fit``,
``train_on_batch`` and ``optimist compare``'s trials run.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

import numpy as np
import torch

from optimist import monitor as _monitor
from optimist.training import data as _data
from optimist.training import distributed as _distributed
from optimist.training.callbacks import BackupAndRestore, Callback, CallbackList, TerminateOnNaN
from optimist.training.curvature import CurvatureRefresh
from optimist.training.history import History
from optimist.training.progress import Progress, resolve_verbose

#: Without TerminateOnNaN, ``fit`` checks the running loss for NaN/inf every this many batches
#: (and at the end of each epoch); ``check_nan=1`` checks every batch.
NAN_CHECK_EVERY = 50


def _check_int(name: str, value: Any, minimum: int, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")


def _optimizer_mode(optimizer: Any, training: bool) -> None:
    """Optimizers with a train and an eval mode (Schedule-Free's ``train()``/``eval()``): train
    mode for the updates, eval mode (the averaged weights) for validation and after ``fit``.
    Not for Keras-style optimizers: Keras has no such modes (its ScheduleFreeAdamW evaluates at
    the weights it trains, ``y``)."""
    if getattr(optimizer, "keras_optimizer", None) is not None:
        return
    switch = getattr(optimizer, "train" if training else "eval", None)
    if callable(switch) and callable(getattr(optimizer, "eval" if training else "train", None)):
        switch()


def _distributed_run() -> bool:
    """Under torch.distributed the running sums stay tensors (host sums made a rank abort at
    exit in the torchrun tests; reductions across ranks take tensors anyway)."""
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def _loss_scale(
    optimizer: torch.optim.Optimizer | None,
) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """A Keras optimizer's ``scale_loss`` if it scales the loss (``loss_scale_factor``, or a
    LossScaleOptimizer's dynamic scale): fit calls it on every batch's loss before
    ``backward``."""
    keras = getattr(optimizer, "keras_optimizer", None)
    return keras.scale_loss if keras is not None and keras.scales_loss else None


class _LossSum:
    """The running sum of ``batch loss * batch size`` in float64, without a host sync per
    batch: a Python float for losses on the CPU (``.item()`` is free there, an in-place add on
    a 0-d tensor is a kernel launch), a tensor on an accelerator."""

    __slots__ = ("_dev", "_host")

    def __init__(self, device: torch.device) -> None:
        self._host = 0.0
        self._dev = (
            None
            if device.type == "cpu" and not _distributed_run()
            else torch.zeros((), dtype=torch.float64, device=device)
        )

    @classmethod
    def of(cls, total: torch.Tensor) -> _LossSum:
        out = cls(total.device)
        if out._dev is None:
            out._host = float(total)
        else:
            out._dev.copy_(total)
        return out

    def add(self, loss: torch.Tensor, n: int) -> None:
        if self._dev is None:
            self._host += loss.item() * n
        else:
            self._dev.add_(loss.detach(), alpha=n)

    def value(self) -> float:
        return self._host if self._dev is None else float(self._dev)

    def tensor(self) -> torch.Tensor:
        if self._dev is None:
            return torch.tensor(self._host, dtype=torch.float64)
        return self._dev

    def finite(self) -> bool:
        return math.isfinite(self.value())


class _Pass(NamedTuple):
    """What every batch of one pass over data (a training epoch, an evaluation) uses; unpacked
    into locals by the batch loops."""

    metrics: list[Any]
    loss_fn: Callable[..., torch.Tensor]
    fold: bool
    forward: Callable[..., Any]
    penalized: list[Any]
    loss_sum: _LossSum


class TrainLoopMixin:
    """``fit`` and the per-batch step of :class:`Model`."""

    def fit(
        self,
        x: Any = None,
        y: Any = None,
        batch_size: int | None = 32,
        epochs: int = 1,
        verbose: int | str = "auto",
        callbacks: Iterable[Callback] | None = None,
        validation_split: float = 0.0,
        validation_data: Any = None,
        shuffle: bool = True,
        class_weight: dict[int, float] | None = None,
        sample_weight: Any = None,
        initial_epoch: int = 0,
        steps_per_epoch: int | None = None,
        validation_batch_size: int | None = None,
        validation_freq: int = 1,
        check_nan: bool | int = True,
        monitor: bool = True,
        strategy: str | None = None,
    ) -> History:
        """Train for ``epochs - initial_epoch`` epochs; returns a :class:`History`.

        ``x``/``y``: NumPy arrays, tensors or nested lists, or ``x`` a
        ``torch.utils.data.DataLoader``/``Dataset`` yielding ``(x, y)`` (or ``(x, y, w)``).
        ``batch_size=None`` takes the whole data set per step (full-batch gradient descent),
        ``batch_size=1`` is stochastic gradient descent. ``validation_split`` holds out the
        *last* fraction of the arrays (before shuffling, as Keras); ``validation_data`` is
        ``(x_val, y_val)``, ``(x_val, y_val, w_val)`` or a DataLoader/Dataset, and wins over the
        split. ``class_weight`` maps class index -> weight (scaling each sample's loss).
        ``steps_per_epoch`` caps the batches per epoch (a DataLoader then continues where the
        previous epoch stopped). ``check_nan``: stop with ``FloatingPointError`` when the loss
        becomes NaN/inf (checked every ``NAN_CHECK_EVERY`` batches and at each epoch's end, or
        every ``check_nan`` batches if an int; ``False`` disables). ``monitor``: adds an
        ``optimist.monitor.Monitor()`` in light mode (warns once per verdict) unless ``callbacks``
        holds one; ``False`` turns it off.
        ``verbose``: 0 silent, 1 (``"auto"``) a progress bar per epoch, 2 one line per epoch.
        ``strategy="ddp"``: data-parallel over the initialised ``torch.distributed`` process
        group (see :mod:`optimist.training.distributed`).
        """
        self._require_compiled("fit")
        ddp = _distributed.start(self, strategy)
        verbose = resolve_verbose(verbose)
        if ddp is not None:
            verbose = ddp.verbose(verbose)
        _check_int("epochs", epochs, 0)
        _check_int("initial_epoch", initial_epoch, 0)
        _check_int("batch_size", batch_size, 1, allow_none=True)
        _check_int("validation_batch_size", validation_batch_size, 1, allow_none=True)
        _check_int("steps_per_epoch", steps_per_epoch, 1, allow_none=True)
        _check_int("validation_freq", validation_freq, 1)
        if isinstance(validation_split, bool) or not (0.0 <= float(validation_split) < 1.0):
            raise ValueError(f"validation_split must be in [0, 1), got {validation_split!r}")
        if isinstance(check_nan, bool):
            nan_every = NAN_CHECK_EVERY if check_nan else 0
        else:
            _check_int("check_nan", check_nan, 1)
            nan_every = int(check_nan)
        callbacks = list(callbacks or [])
        if monitor and not any(isinstance(cb, _monitor.Monitor) for cb in callbacks):
            callbacks.append(_monitor.Monitor())
        if ddp is not None:
            callbacks = ddp.callbacks(callbacks)
        terminate_cb = any(isinstance(cb, TerminateOnNaN) for cb in callbacks)
        if terminate_cb:
            nan_every = 0
        check_nan = bool(check_nan) and not terminate_cb
        cw_table = (
            _data.class_weight_table(class_weight, None) if class_weight is not None else None
        )

        # ---- training data
        generator = self._shuffle_generator
        train: _data.ArrayData | _data.LoaderData
        val: Any = None
        if _data.is_loader_like(x):
            if y is not None:
                raise ValueError("when x is a DataLoader/Dataset it provides the targets: y=None")
            if sample_weight is not None:
                raise ValueError("sample_weight is not supported with DataLoader input")
            source = x
            if validation_split and validation_data is None:
                if isinstance(x, torch.utils.data.DataLoader):
                    raise ValueError(
                        "validation_split is not supported for DataLoader input; pass "
                        "validation_data"
                    )
                source, val_set = _data.subset_last(x, float(validation_split))
                val = _data.LoaderData(val_set, validation_batch_size or batch_size, False, None)
            train = _data.LoaderData(source, batch_size, shuffle, generator)
        else:
            train = self._arrays(x, y, sample_weight, "")
            self._prepare_model(train.x)
            train = self._move(train)
            self._check_arrays(train, "")
            if cw_table is not None:
                cw = _data.class_weights_for(train.y, cw_table.to(train.y.device))
                sw = cw if train.sample_weight is None else train.sample_weight * cw
                train = _data.ArrayData(train.x, train.y, sw)
            if validation_split and validation_data is None:
                train, val = train.split_last(float(validation_split))
            train = self._compact_targets(train)
            val = None if val is None else self._compact_targets(val)
        if validation_data is not None:
            val = self._compact_targets(
                self._validation_source(validation_data, validation_batch_size or batch_size)
            )
        if ddp is not None:
            if isinstance(getattr(train, "x", None), tuple):
                raise ValueError("strategy='ddp' takes single-input models (one x array)")
            if validation_batch_size is None and batch_size is not None:
                validation_batch_size = batch_size  # validation is whole on every rank
            train, batch_size = ddp.shard(train, batch_size)
        if isinstance(train, _data.ArrayData):
            steps = train.steps(batch_size)
            if steps_per_epoch is not None:
                steps = min(steps, steps_per_epoch)
        else:
            steps = steps_per_epoch or train.steps()
        self._fit_steps = (epochs - initial_epoch) * steps if steps else None
        # A model still unbuilt here (DataLoader input) builds on its first batch.
        optimizer = self._ensure_optimizer() if self._is_built() else None

        # ---- loop
        history = History()
        cbs = CallbackList(
            [*callbacks, history], self, {"epochs": epochs, "steps": steps, "verbose": verbose}
        )
        self.history = history
        self.stop_training = False
        history.model = self
        logs: dict[str, Any] = {}
        self._initial_epoch = initial_epoch  # BackupAndRestore moves it to the restored epoch
        cbs.on_train_begin()
        initial_epoch = self._initial_epoch
        if ddp is not None:
            initial_epoch = ddp.agree_epoch(initial_epoch)
        epoch = initial_epoch
        try:
            for epoch in range(initial_epoch, epochs):
                if ddp is not None:
                    ddp.set_epoch(epoch)
                cbs.on_epoch_begin(epoch)
                logs = self._train_epoch(
                    train,
                    batch_size=batch_size,
                    shuffle=shuffle,
                    steps=steps,
                    steps_per_epoch=steps_per_epoch,
                    epoch=epoch,
                    epochs=epochs,
                    optimizer=optimizer,
                    cbs=cbs,
                    verbose=verbose,
                    nan_every=nan_every,
                    check_nan=check_nan,
                    cw_table=cw_table,
                    val=val,
                    val_batch_size=validation_batch_size or batch_size,
                    validate=val is not None and (epoch + 1 - initial_epoch) % validation_freq == 0,
                    ddp=ddp,
                )
                self.epoch = epoch + 1
                cbs.on_epoch_end(epoch, logs)
                if ddp is not None:
                    self.stop_training = ddp.agree_stop(self.stop_training)
                if self.stop_training:
                    break
        except RuntimeError as exc:
            if ddp is None:
                raise
            backup = any(isinstance(cb, BackupAndRestore) for cb in callbacks)
            lost = ddp.lost_rank(exc, epoch, epochs, backup)
            if lost is exc:
                raise
            raise lost from None
        finally:
            self.eval()  # outside fit the model is in inference mode, as in Keras
        keras_opt = self._keras_optimizer()
        if keras_opt is not None:
            keras_opt.finalize_variable_values()  # use_ema: the averaged weights, as Keras
        cbs.on_train_end(logs)
        return history

    def _begin_pass(self) -> _Pass:
        """Reset the compiled metrics and gather what a pass's batches use: the loss, the
        forward function (logits when the loss folds in the output activation), the layers
        with regularizers and an empty running loss sum."""
        metrics = self.compiled_metrics
        for m in metrics:
            m.reset()
        fold = self._fold
        forward = self._forward_logits if fold else self._plain_call
        penalized = self._regularized_layers()
        return _Pass(metrics, self.loss, fold, forward, penalized, _LossSum(self._device()))

    def _running_logs(self, loss_sum: _LossSum, seen: int) -> dict[str, float]:
        logs = {"loss": loss_sum.value() / max(seen, 1)}
        for m in self.compiled_metrics:
            logs[m.name] = m.result()
        return logs

    def _nan_error(
        self, epoch: int, epochs: int, lo: int, hi: int, steps: Any
    ) -> FloatingPointError:
        where = f"batch {hi}" if lo == hi else f"one of batches {lo}-{hi}"
        return FloatingPointError(
            f"the loss became NaN or infinite in epoch {epoch + 1}/{epochs}, at {where}"
            f"{f' of {steps}' if steps else ''}; training stopped. Lower the learning rate, check "
            f"the data and the loss, or pass callbacks=[TerminateOnNaN()] to stop without an "
            f"error (check_nan=1 checks every batch)."
        )

    def _train_epoch(
        self,
        train: Any,
        *,
        batch_size: int | None,
        shuffle: bool,
        steps: int | None,
        steps_per_epoch: int | None,
        epoch: int,
        epochs: int,
        optimizer: torch.optim.Optimizer | None,
        cbs: CallbackList,
        verbose: int,
        nan_every: int,
        check_nan: bool,
        cw_table: torch.Tensor | None,
        val: Any,
        val_batch_size: int | None,
        validate: bool,
        ddp: _distributed.DDPStrategy | None = None,
    ) -> dict[str, Any]:
        self.train()
        metrics, loss_fn, fold, forward, penalized, loss_sum = self._begin_pass()
        if ddp is not None:
            forward = ddp.forward(fold)
        seen = 0
        done = 0
        checked = 0
        batch_logs = cbs.train_batch_logs
        batch_begin = cbs.on_train_batch_begin if cbs.wants["on_train_batch_begin"] else None
        scale = _loss_scale(optimizer)
        curvature = CurvatureRefresh.for_optimizer(optimizer, loss_fn, fold)
        _optimizer_mode(optimizer, True)
        is_loader = not isinstance(train, _data.ArrayData)
        multi = not is_loader and isinstance(train.x, tuple)
        first = is_loader
        progress = Progress(
            verbose, steps, f"Epoch {epoch + 1}/{epochs}", header=f"Epoch {epoch + 1}/{epochs}"
        )

        def running() -> dict[str, float]:
            return self._running_logs(loss_sum, seen)

        logs: dict[str, Any] | None = None
        try:
            for xb, yb, wb in self._batches(
                train, batch_size, shuffle, steps_per_epoch if is_loader else None
            ):
                if batch_begin is not None:
                    batch_begin(done)
                if first:
                    # DataLoader input: checks (and a lazy build) on the first batch.
                    self._check_batch(xb, yb)
                    optimizer = self._ensure_optimizer()
                    loss_sum = _LossSum(self._device())
                    scale = _loss_scale(optimizer)
                    curvature = CurvatureRefresh.for_optimizer(optimizer, loss_fn, fold)
                    _optimizer_mode(optimizer, True)
                    first = False
                if is_loader and cw_table is not None:
                    cw = _data.class_weights_for(yb, cw_table.to(yb.device))
                    wb = cw if wb is None else wb * cw
                optimizer.zero_grad()
                out = forward(*xb) if multi else forward(xb)
                loss = loss_fn(yb, out, wb, fold)
                if penalized:
                    loss = loss + self._penalty(penalized)
                (loss if scale is None else scale(loss)).backward()
                optimizer.step()
                if curvature is not None:  # SophiaG's curvature estimate, every k steps
                    curvature.after_step(forward, xb)
                n = (xb[0] if multi else xb).shape[0]
                seen += n
                done += 1
                loss_sum.add(loss, n)
                if metrics:
                    out = out.detach()
                    for m in metrics:
                        m.update(yb, out, fold)
                if batch_logs:
                    cbs.on_train_batch_end(done - 1, running())
                progress.step(done, running)
                if nan_every and done % nan_every == 0:
                    finite = ddp.all_finite(loss_sum.tensor()) if ddp else loss_sum.finite()
                    if not finite:
                        raise self._nan_error(epoch, epochs, checked + 1, done, steps)
                    checked = done
                # under DDP every rank stops after the same batch: agreed when a batch hook could
                # ask for it (stop_each_batch), else at the epoch's end
                stop = self.stop_training
                if ddp is not None:
                    stop = ddp.stop_each_batch and ddp.agree_stop(stop)
                    self.stop_training |= stop
                if stop or done == steps_per_epoch:
                    break
            if ddp is not None:
                total, seen = ddp.reduce(loss_sum.tensor(), seen, metrics)
                loss_sum = _LossSum.of(total)
            logs = running()
            if check_nan and seen and not math.isfinite(logs["loss"]):
                raise self._nan_error(epoch, epochs, checked + 1, done, steps)
            _optimizer_mode(optimizer, False)
            if validate and val is not None:
                val_logs = self._evaluate_source(val, val_batch_size, cbs, 0, "Validation")
                logs.update({f"val_{k}": v for k, v in val_logs.items()})
        finally:
            progress.close(logs)
        return logs

    def train_on_batch(
        self,
        x: Any,
        y: Any = None,
        sample_weight: Any = None,
        class_weight: dict[int, float] | None = None,
        return_dict: bool = False,
    ) -> float | list[float] | dict[str, float]:
        """One gradient step on this batch (Keras' ``train_on_batch``); returns the loss (and
        metrics) of the batch, computed before the step."""
        history = self.fit(
            x,
            y,
            batch_size=None,
            epochs=1,
            verbose=0,
            shuffle=False,
            sample_weight=sample_weight,
            class_weight=class_weight,
        )
        logs = {k: v[-1] for k, v in history.history.items()}
        if return_dict:
            return logs
        values = list(logs.values())
        return values[0] if len(values) == 1 else values
