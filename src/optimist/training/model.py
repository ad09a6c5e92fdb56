"""The training engine: ``compile`` / ``fit`` / ``evaluate`` / ``predict`` / ``save``.

:class:`Model` is a ``torch.nn.Module``. Use it three ways:

* ``optimist.Model(module)`` wraps any ``torch.nn.Module`` (trained in place);
* subclass it and define ``forward`` (like subclassing ``keras.Model``);
* :class:`~optimist.Sequential` derives from it.

What ``fit`` does per batch is exactly what a hand-written PyTorch loop does::

    opt.zero_grad(); loss = loss_fn(y, model(x)); loss.backward(); opt.step()

with the loss mean-reduced over the batch. The only random draws ``fit`` makes itself are the
shuffles: each epoch, with ``shuffle=True``, one ``torch.randperm(n, generator=g)`` from the
model's own generator ``g``, created by ``compile`` as
``torch.Generator().manual_seed(torch.initial_seed())`` (the last ``torch.manual_seed``);
batches are then ``x[perm[i * batch_size:(i + 1) * batch_size]]``. Everything else random
(initialisation, dropout) comes from torch's global generator, in the same order as in a hand
loop, so the two give identical numbers for the same seed.
"""

from __future__ import annotations

import json
import math
import os
import re
import warnings
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from optimist import monitor as _monitor
from optimist.training import checkpoint as _ckpt
from optimist.training import data as _data
from optimist.training import distributed as _distributed
from optimist.training import losses as _losses
from optimist.training import metrics as _metrics
from optimist.training import optimizers as _keras_opt
from optimist.training import schedules as _keras_schedules
from optimist.training.callbacks import BackupAndRestore, Callback, CallbackList, TerminateOnNaN
from optimist.training.history import History
from optimist.training.layers import Layer, count_weights
from optimist.training.optimizer_view import keras_view
from optimist.training.progress import Progress, resolve_verbose

#: Without TerminateOnNaN, ``fit`` checks the running loss for NaN/inf every this many batches
#: (and at the end of each epoch); ``check_nan=1`` checks every batch.
NAN_CHECK_EVERY = 50

_FOLDABLE = {"softmax", "sigmoid"}


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def _check_int(name: str, value: Any, minimum: int, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, (str, _metrics.Metric)) or callable(value):
        return [value]
    return list(value)


def _fmt_count(n: int) -> str:
    size = n * 4.0
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{n:,} ({size:.2f} {unit})"
        size /= 1024
    return f"{n:,}"  # pragma: no cover


def _optimizer_mode(optimizer: Any, training: bool) -> None:
    """Optimizers with a train and an eval mode (Schedule-Free's ``train()``/``eval()``): train
    mode for the updates, eval mode (the averaged weights) for validation and after ``fit``."""
    switch = getattr(optimizer, "train" if training else "eval", None)
    if callable(switch) and callable(getattr(optimizer, "eval" if training else "train", None)):
        switch()


def _distributed_run() -> bool:
    """Under torch.distributed the running sums stay tensors (host sums made a rank abort at
    exit in the torchrun tests; reductions across ranks take tensors anyway)."""
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def _loss_scale(optimizer: torch.optim.Optimizer | None) -> float | None:
    """A Keras optimizer's ``loss_scale_factor`` (fit scales the loss before ``backward``)."""
    keras = getattr(optimizer, "keras_optimizer", None)
    return None if keras is None else keras.loss_scale_factor


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


class Model(nn.Module):
    """A ``torch.nn.Module`` with Keras' training API. ``Model(module)`` wraps ``module``.

    Note: this class's ``compile`` is Keras' (optimizer, loss, metrics); it shadows
    ``torch.nn.Module.compile`` -- call ``torch.compile(model)`` for TorchDynamo instead.
    """

    def __new__(cls, *args: Any, **kwargs: Any) -> Model:
        # Keras' functional form, Model(inputs, outputs), makes a Functional model.
        if cls is Model and ("inputs" in kwargs or "outputs" in kwargs or len(args) >= 2):
            from optimist.training.functional import Functional

            return super().__new__(Functional)
        return super().__new__(cls)

    def __init__(self, module: nn.Module | None = None, name: str | None = None) -> None:
        super().__init__()
        if module is not None and not isinstance(module, nn.Module):
            raise TypeError(f"Model wraps a torch.nn.Module, got {type(module).__name__}")
        self._wraps = module is not None
        if module is not None:
            self.module = module
        default = (
            _snake(type(module).__name__) if module is not None else _snake(type(self).__name__)
        )
        self.name = name or default
        self.optimizer: torch.optim.Optimizer | None = None
        self.loss: _losses.Loss | None = None
        self.compiled_metrics: list[_metrics.Metric] = []
        self.compiled = False
        self.stop_training = False
        self.history: History | None = None
        self.epoch = 0  # epochs completed (pass as initial_epoch to continue)
        self._optimizer_spec: Any = None
        self._optimizer_name: str | None = None
        self._compile_config: dict[str, Any] | None = None
        self._fold: str | None = None
        self._shuffle_generator: torch.Generator | None = None
        self._sample_input: torch.Tensor | None = None
        self._lr_schedule: Any = None
        self.eval()  # Keras: inference behaviour (Dropout off) everywhere but inside fit

    def __setattr__(self, name: str, value: Any) -> None:
        if isinstance(value, nn.Module) and "training" in self.__dict__:
            value.train(self.training)  # a submodule added later follows the model's mode
        super().__setattr__(name, value)

    @property
    def optimizer(self) -> torch.optim.Optimizer | None:
        """The ``torch.optim.Optimizer`` that runs the updates, with Keras' ``learning_rate``,
        ``iterations`` and ``scale_loss`` added (see :mod:`optimist.training.optimizer_view`)."""
        return self.__dict__.get("_optimizer")

    @optimizer.setter
    def optimizer(self, value: torch.optim.Optimizer | None) -> None:
        if isinstance(value, torch.optim.Optimizer):
            value = keras_view(value)
        self.__dict__["_optimizer"] = value

    def _plain_call(self, *args: Any, **kwargs: Any) -> Any:
        """``torch.nn.Module.__call__`` (hooks included) without the Keras conveniences, for
        the engine's own batches, which are already tensors of the right dtype."""
        return nn.Module.__call__(self, *args, **kwargs)

    def __call__(self, *args: Any, training: bool | None = None, **kwargs: Any) -> Any:
        """``model(x)`` as in Keras: ``x`` may be a NumPy array (then no gradient is tracked
        and the result is a plain tensor: ``model(x).numpy()`` works) or a tensor of any float
        dtype (cast to the model's dtype); ``training=True/False`` runs the call in train or
        inference mode (default: the current mode, which is inference outside ``fit``)."""
        if len(args) == 1 and self._input_count() > 1 and isinstance(args[0], (list, tuple, dict)):
            args = tuple(part for part, _, _ in self._input_parts(args[0], "x"))  # model([a, b])
        if args:
            converted, from_numpy = [], False
            for i, x in enumerate(args[: self._input_count()]):
                if isinstance(x, (np.ndarray, list)):
                    device = self._device() if self._is_built() else None
                    kind = self._input_kinds()[i]
                    x = _data.to_tensor(x, "x", kind=kind, device=device, dtype=self._dtype())
                    from_numpy = True
                elif isinstance(x, torch.Tensor) and x.is_floating_point():
                    dtype = self._dtype()
                    if x.dtype != dtype:
                        x = x.to(dtype)
                converted.append(x)
            args = (*converted, *args[len(converted) :])
            if from_numpy:
                with torch.no_grad():
                    return self._call_in_mode(args, training, kwargs)
        return self._call_in_mode(args, training, kwargs)

    def _call_in_mode(self, args: tuple[Any, ...], training: bool | None, kwargs: Any) -> Any:
        if training is None or bool(training) == self.training:
            return super().__call__(*args, **kwargs)
        was_training = self.training
        self.train(bool(training))
        try:
            return super().__call__(*args, **kwargs)
        finally:
            self.train(was_training)

    # ------------------------------------------------------------------------------------------
    # structure hooks (overridden by Sequential)
    # ------------------------------------------------------------------------------------------
    def forward(self, *args: Any, **kwargs: Any) -> Any:
        if not self._wraps:
            raise NotImplementedError(
                f"{type(self).__name__} has no forward(): subclass optimist.Model and define "
                f"forward, or wrap a module with optimist.Model(module)"
            )
        return self.module(*args, **kwargs)

    def _network(self) -> nn.Module:
        """The module whose weights are saved (the wrapped module, or the model itself)."""
        return self.module if self._wraps else self

    def _final_activation(self) -> str | None:
        """``"softmax"``/``"sigmoid"`` if the model ends in that activation and it can be
        split off (see :meth:`_forward_logits`), else ``None``."""
        net = self.module if self._wraps else None
        if isinstance(net, nn.Sequential) and len(net) > 1:
            last = net[-1]
            if isinstance(last, nn.Softmax) and last.dim in (-1, 1):
                return "softmax"
            if isinstance(last, nn.Sigmoid):
                return "sigmoid"
        return None

    def _forward_logits(self, x: torch.Tensor) -> torch.Tensor:
        """The forward pass without the final activation named by :meth:`_final_activation`."""
        for layer in list(self.module)[:-1]:
            x = layer(x)
        return x

    def _is_built(self) -> bool:
        return not any(
            isinstance(p, nn.parameter.UninitializedParameter) for p in self.parameters()
        ) and not any(isinstance(m, Layer) and not m.built for m in self.modules())

    def _build_from(self, x: torch.Tensor) -> None:
        """Materialise lazy parameters with one no-grad, eval-mode forward pass on ``x[:1]``."""
        self._probe(x)

    def _expected_input_shape(self) -> tuple[int | None, ...] | None:
        return None

    def _input_count(self) -> int:
        """How many input tensors ``forward`` takes (a functional model may take several)."""
        return 1

    def _input_kinds(self) -> list[str]:
        """How each input array is converted (see :func:`optimist.training.data.to_tensor`)."""
        return [self._x_kind()]

    def _input_parts(self, x: Any, name: str) -> list[tuple[Any, str, str]]:
        """A multi-input model's ``x`` (a list in input order, or a dict by input name) as
        ``(array, name for errors, kind)`` per input (see :class:`Functional`)."""
        raise NotImplementedError  # pragma: no cover - single-input models never ask

    def _static_output_shape(self, input_shape: tuple[int | None, ...]) -> tuple | None:
        return None

    def _takes_indices(self) -> bool:
        first = next((m for m in self._network().modules() if not list(m.children())), None)
        from optimist.training.layers import Embedding

        return isinstance(first, (nn.Embedding, nn.EmbeddingBag, Embedding))

    def _probe(self, x: torch.Tensor) -> Any:
        was_training = self.training
        self.eval()
        try:
            with torch.no_grad():
                if isinstance(x, tuple):
                    return self._plain_call(*(t[:1] for t in x))
                return self._plain_call(x[:1])
        finally:
            self.train(was_training)

    def _device(self) -> torch.device:
        for t in self.parameters():
            if not isinstance(t, nn.parameter.UninitializedParameter):
                return t.device
        for t in self.buffers():
            return t.device
        return torch.device("cpu")

    def _dtype(self) -> torch.dtype:
        """The floating dtype inputs are cast to: the parameters', else torch's default."""
        for t in self.parameters():
            if not isinstance(t, nn.parameter.UninitializedParameter) and t.is_floating_point():
                return t.dtype
        return torch.get_default_dtype()

    # ------------------------------------------------------------------------------------------
    # compile
    # ------------------------------------------------------------------------------------------
    def compile(  # type: ignore[override]
        self,
        optimizer: str | torch.optim.Optimizer | Callable[..., torch.optim.Optimizer] = "rmsprop",
        loss: str | _losses.Loss | Callable[..., torch.Tensor] | None = None,
        metrics: Sequence[str | _metrics.Metric | Callable[..., Any]] | None = None,
        lr_schedule: Any = None,
    ) -> None:
        """Configure training (Keras' ``compile``).

        ``optimizer``: a Keras name (``"sgd"``, ``"rmsprop"``, ``"adam"``, ``"adamw"``,
        ``"adagrad"``, ``"adadelta"``, ``"adamax"``, ``"nadam"``: Keras 3's defaults and update
        rule, see :mod:`optimist.optimizers`), a Keras-style optimizer object
        (``optimist.optimizers.Adam(learning_rate=1e-3)``), another name of the registry
        :func:`optimist.optim.optimizer` (``"momentum"``, ``"radam"``...: torch's conventions),
        a ``torch.optim.Optimizer`` instance over this model's parameters, or a factory
        ``params -> Optimizer`` (e.g. ``functools.partial(torch.optim.SGD, lr=0.1)``). In every
        case ``model.optimizer`` is the ``torch.optim.Optimizer`` that runs the updates (a Keras
        object's is ``model.optimizer.keras_optimizer``). A model without parameters yet (no
        ``input_shape``) gets its optimizer when ``fit`` builds it from the first data it sees;
        an optimizer *instance* needs a built model.

        ``loss``: a name (``categorical_crossentropy``, ``sparse_categorical_crossentropy``,
        ``binary_crossentropy``, ``mse``, ``mae``, ``huber``, ...), a
        :class:`~optimist.training.losses.Loss` or a callable. ``metrics``: names
        (``accuracy``, ``top_k_accuracy``, ``mae``, ``mse``, ...), Metric instances or callables.

        ``lr_schedule`` (optimist's addition, for any optimizer): a schedule object
        (``optimist.optimizers.schedules.CosineDecay(...)``, ``...schedules.get("wsd", 1e-3,
        total_steps=...)``) or any ``callable(step) -> learning rate``; or the name of a schedule
        of :mod:`optimist.schedules` (``"warmup_cosine"``, ``"wsd"``, ``"inverse_sqrt"``...) or a
        dict ``{"name": ..., **its arguments}``, which then peaks at the optimizer's own
        learning rate and, where it takes ``total_steps`` and none is given, runs over the first
        ``fit``'s epochs x steps. It becomes ``model.optimizer.learning_rate``, evaluated before
        every update.

        Compiling also (re)seeds the shuffle generator from ``torch.initial_seed()``.
        """
        loss_fn = _losses.get(loss) if loss is not None else None
        metric_list = [
            _metrics.get(m, loss_name=loss_fn.name if loss_fn is not None else None)
            for m in _as_list(metrics)
        ]
        names = [m.name for m in metric_list]
        if len(set(names)) != len(names):
            raise ValueError(f"metric names must be unique, got {names}")
        if "loss" in names:
            raise ValueError("a metric may not be called 'loss'")

        _keras_schedules.check(lr_schedule)
        self.optimizer = None
        self._optimizer_name = None
        self._lr_schedule = lr_schedule
        if isinstance(optimizer, str) and _keras_opt.is_keras_name(optimizer):
            optimizer = _keras_opt.get(optimizer)  # Keras 3's defaults and rule
        self._optimizer_spec = optimizer
        if isinstance(optimizer, _keras_opt.Optimizer):
            pass  # built on this model's parameters by _ensure_optimizer
        elif isinstance(optimizer, str):
            from optimist import optim

            optim.spec(optimizer)  # unknown names fail now, with close matches
            self._optimizer_name = optimizer.lower()
        elif isinstance(optimizer, torch.optim.Optimizer):
            self._check_optimizer(optimizer)
            self.optimizer = optimizer
        elif not callable(optimizer):
            raise ValueError(
                f"optimizer must be a name, a torch.optim.Optimizer or a factory, got "
                f"{type(optimizer).__name__}"
            )
        self.loss = loss_fn
        self.compiled_metrics = metric_list
        self._fold = None
        if (
            loss_fn is not None
            and loss_fn.logits_activation is not None
            and not loss_fn.from_logits
            and self._final_activation() == loss_fn.logits_activation
        ):
            self._fold = loss_fn.logits_activation
        self._compile_config = {
            "loss": self._loss_config(loss),
            "metrics": [
                self._metric_config(m, obj)
                for m, obj in zip(_as_list(metrics), metric_list, strict=True)
            ],
        }
        self._shuffle_generator = torch.Generator().manual_seed(torch.initial_seed())
        self.compiled = True
        if self.optimizer is None and self._is_built() and self._has_parameters():
            self._build_optimizer()
        if self.optimizer is not None and callable(lr_schedule):
            self._ensure_optimizer()  # a schedule object applies now; a name at fit (steps known)

    @staticmethod
    def _loss_config(loss: Any) -> Any:
        if loss is None or isinstance(loss, str):
            return loss
        if _losses.builtin_name(loss) is not None:
            return _losses.builtin_name(loss)
        if type(loss) in set(_losses.LOSSES.values()):
            return {"class": type(loss).__name__, "config": loss.get_config()}
        return None

    @staticmethod
    def _metric_config(spec: Any, metric: _metrics.Metric) -> Any:
        if isinstance(spec, str):
            return spec
        if isinstance(metric, _metrics.TopKAccuracy):
            return {"class": "TopKAccuracy", "k": metric.k, "name": metric.name}
        return None

    def _check_optimizer(self, optimizer: torch.optim.Optimizer) -> None:
        if not self._is_built():
            raise ValueError(
                "this model has no parameters yet (it builds on its first input), so an "
                "optimizer instance cannot hold them: pass input_shape= to the first layer, call "
                "model.build(input_shape), or pass the optimizer by name or as a factory"
            )
        mine = {id(p) for p in self.parameters()}
        theirs = [p for g in optimizer.param_groups for p in g["params"]]
        if theirs and not any(id(p) in mine for p in theirs):
            raise ValueError("the optimizer holds none of this model's parameters")

    # ------------------------------------------------------------------------------------------
    # Keras' weight lists and penalties
    # ------------------------------------------------------------------------------------------
    def _regularized_layers(self) -> list[Layer]:
        return [
            m
            for m in self.modules()
            if isinstance(m, Layer) and (m.kernel_regularizer or m.bias_regularizer)
        ]

    @staticmethod
    def _penalty(layers: list[Layer]) -> torch.Tensor:
        return torch.stack([p for layer in layers for p in layer.losses]).sum()

    @property
    def losses(self) -> list[torch.Tensor]:
        """The weight penalties of the layers' regularizers (added to the loss by fit)."""
        return [p for layer in self._regularized_layers() for p in layer.losses]

    @property
    def trainable_weights(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    @property
    def non_trainable_weights(self) -> list[torch.Tensor]:
        frozen = [p for p in self.parameters() if not p.requires_grad]
        return frozen + [b for b in self.buffers() if b.is_floating_point()]

    @property
    def weights(self) -> list[torch.Tensor]:
        return self.trainable_weights + self.non_trainable_weights

    def _keras_optimizer(self) -> _keras_opt.Optimizer | None:
        """The Keras-style optimizer object given to ``compile`` (by name or instance), if any."""
        spec = self._optimizer_spec
        return spec if isinstance(spec, _keras_opt.Optimizer) else None

    def _has_parameters(self) -> bool:
        return any(p.requires_grad for p in self.parameters())

    def _ensure_optimizer(self) -> torch.optim.Optimizer:
        if self.optimizer is None:
            self._build_optimizer()
        if self._lr_schedule is not None:  # compile(lr_schedule=...), set once
            spec, self._lr_schedule = self._lr_schedule, None
            self.optimizer.learning_rate = _keras_schedules.resolve(
                spec, float(self.optimizer.learning_rate), self.__dict__.get("_fit_steps")
            )
        return self.optimizer

    def _build_optimizer(self) -> None:
        params = [p for p in self.parameters() if p.requires_grad]
        if not params:
            raise ValueError("the model has no trainable parameters to optimize")
        spec = self._optimizer_spec
        if spec is None:
            raise RuntimeError(
                "the model has no optimizer: call model.compile(optimizer=..., loss=...) again"
            )
        if isinstance(spec, str):
            from optimist import optim

            self.optimizer = optim.optimizer(spec, params)
        else:
            opt = spec(params)
            if not isinstance(opt, torch.optim.Optimizer):
                raise ValueError(
                    f"the optimizer factory returned {type(opt).__name__}, not a "
                    f"torch.optim.Optimizer"
                )
            self.optimizer = opt

    def _require_compiled(self, what: str, need_loss: bool = True) -> None:
        if not self.compiled:
            raise RuntimeError(
                f"You must compile the model before calling {what}(): call "
                f"model.compile(optimizer=..., loss=..., metrics=[...]) first"
            )
        if need_loss and self.loss is None:
            raise RuntimeError(
                f"the model was compiled without a loss; call model.compile(optimizer=..., "
                f"loss=...) before {what}()"
            )

    # ------------------------------------------------------------------------------------------
    # data
    # ------------------------------------------------------------------------------------------
    def _x_kind(self) -> str:
        return "input_int" if self._takes_indices() else "float"

    def _arrays(
        self,
        x: Any,
        y: Any,
        sample_weight: Any,
        prefix: str,
        *,
        need_y: bool = True,
        check: bool = True,
    ) -> _data.ArrayData:
        if x is None:
            raise ValueError(f"{prefix}x is required")
        if need_y and y is None:
            raise ValueError(
                f"{prefix}y is required for array input (only a DataLoader/Dataset may yield "
                f"the targets itself)"
            )
        device = self._device() if self._is_built() else None
        dtype = self._dtype()
        xt: Any
        if self._input_count() > 1:
            parts = self._input_parts(x, f"{prefix}x")
            xt = tuple(
                _data.to_tensor(part, name, kind=kind, device=device, dtype=dtype)
                for part, name, kind in parts
            )
            for t, (_, name, _) in zip(xt[1:], parts[1:], strict=True):
                if t.shape[0] != xt[0].shape[0]:
                    raise ValueError(
                        f"the inputs have different lengths: {parts[0][1]} has {xt[0].shape[0]} "
                        f"samples, {name} has {t.shape[0]}"
                    )
        else:
            xt = _data.to_tensor(x, f"{prefix}x", kind=self._x_kind(), device=device, dtype=dtype)
        yt = None
        if y is not None:
            kind = self.loss.target_kind if self.loss is not None else "float"
            yt = _data.to_tensor(y, f"{prefix}y", kind=kind, device=device, dtype=dtype)
        wt = None
        if sample_weight is not None:
            wt = _data.to_tensor(
                sample_weight, f"{prefix}sample_weight", kind="float", device=device, dtype=dtype
            )
            if wt.dim() != 1:
                wt = wt.reshape(wt.shape[0], -1)[:, 0] if wt.numel() == wt.shape[0] else wt
            if wt.dim() != 1:
                raise ValueError(
                    f"{prefix}sample_weight must hold one weight per sample, got shape "
                    f"{tuple(wt.shape)}"
                )
        _data.check_lengths(_data.first(xt), yt, wt, prefix)
        if need_y and _data.first(xt).shape[0] == 0:
            raise ValueError(
                f"{prefix}x is empty (0 samples): there is nothing to train or evaluate on"
            )
        if check:
            for i, t in enumerate(xt if isinstance(xt, tuple) else (xt,)):
                _data.check_finite(t, f"{prefix}x" if t is xt else f"{prefix}x[{i}]")
            if yt is not None:
                _data.check_finite(yt, f"{prefix}y")
            if wt is not None:
                _data.check_finite(wt, f"{prefix}sample_weight")
                if bool((wt < 0).any()):
                    raise ValueError(f"{prefix}sample_weight must be >= 0")
        if isinstance(xt, tuple):
            self._check_input_shapes(xt, f"{prefix}x")
        elif self._is_built():
            _data.check_input_shape(tuple(xt.shape), self._expected_input_shape(), f"{prefix}x")
        return _data.ArrayData(xt, yt, wt)

    def _check_input_shapes(self, xs: tuple[torch.Tensor, ...], name: str) -> None:
        """A multi-input model checks each input against its ``Input`` (see Functional)."""

    def _prepare_model(self, x: Any, name: str = "x") -> None:
        """Build from the data if needed, then check the input shape."""
        if isinstance(x, tuple):  # a multi-input (functional) model: built, shapes checked
            if self._sample_input is None:
                self._sample_input = tuple(t[:1].detach().clone() for t in x)  # type: ignore[assignment]
            return
        if not self._is_built():
            self._build_from(x)
        _data.check_input_shape(tuple(x.shape), self._expected_input_shape(), name)
        if self._sample_input is None:
            self._sample_input = x[:1].detach().clone()

    def _move(self, arr: _data.ArrayData) -> _data.ArrayData:
        device = self._device()
        if _data.first(arr.x).device == device:
            return arr
        return _data.ArrayData(
            _data.map_inputs(lambda t: t.to(device), arr.x),
            None if arr.y is None else arr.y.to(device),
            None if arr.sample_weight is None else arr.sample_weight.to(device),
        )

    def _output_shape(self, x: torch.Tensor) -> tuple[int | None, ...]:
        shape = self._static_output_shape((None, *_data.first(x).shape[1:]))
        if shape is None:
            out = self._probe(x)
            if not isinstance(out, torch.Tensor):
                raise ValueError("the model must return a single tensor for fit/evaluate")
            shape = (None, *out.shape[1:])
        return shape

    def _check_arrays(self, arr: _data.ArrayData, prefix: str) -> None:
        """Check targets (and embedding indices) against the model before any training step."""
        from optimist.training.layers import Embedding

        if not isinstance(arr.x, tuple) and not arr.x.is_floating_point():
            emb = next(
                (m for m in self._network().modules() if isinstance(m, (Embedding, nn.Embedding))),
                None,
            )
            size = getattr(emb, "input_dim", None) or getattr(emb, "num_embeddings", None)
            if size is not None and arr.n:
                lo, hi = int(arr.x.min()), int(arr.x.max())
                if lo < 0 or hi >= size:
                    raise ValueError(
                        f"{prefix}x holds indices from {lo} to {hi}, but the embedding has "
                        f"input_dim={size} (indices must be in [0, {size}))"
                    )
        if arr.y is not None and self.loss is not None and arr.n:
            self.loss.check_targets(arr.y, self._output_shape(arr.x))

    # ------------------------------------------------------------------------------------------
    # fit
    # ------------------------------------------------------------------------------------------
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

    def _compact_targets(self, arr: Any) -> Any:
        """Exact one-hot targets of categorical cross-entropy as int64 labels, once per data
        set: the same loss and accuracy, computed with class indices (``F.cross_entropy``'s
        fast path, no ``argmax`` of the targets per batch). Only when every metric reads labels
        the same way; anything else (soft labels, other metrics) is left as it is."""
        if not isinstance(arr, _data.ArrayData) or arr.y is None or arr.y.dim() != 2:
            return arr
        if type(self.loss) is not _losses.CategoricalCrossentropy or not arr.y.is_floating_point():
            return arr
        label_metrics = (_metrics.CategoricalAccuracy, _metrics.TopKAccuracy)
        for m in self.compiled_metrics:
            kind = m.kind if isinstance(m, _metrics.Accuracy) else m
            if not isinstance(kind, label_metrics):
                return arr
        y = arr.y
        if not (bool(((y == 0) | (y == 1)).all()) and bool((y.sum(dim=1) == 1).all())):
            return arr
        return _data.ArrayData(arr.x, y.argmax(dim=1), arr.sample_weight)

    def _validation_source(self, validation_data: Any, batch_size: int | None) -> Any:
        if _data.is_loader_like(validation_data):
            return _data.LoaderData(validation_data, batch_size, False, None)
        if not isinstance(validation_data, (tuple, list)) or len(validation_data) not in (2, 3):
            raise ValueError(
                "validation_data must be (x_val, y_val), (x_val, y_val, sample_weight_val) or "
                "a DataLoader/Dataset"
            )
        xv, yv, *rest = validation_data
        arr = self._arrays(xv, yv, rest[0] if rest else None, "validation ")
        arr = self._move(arr)
        self._check_arrays(arr, "validation ")
        return arr

    def _batches(self, source: Any, batch_size: int | None, shuffle: bool, steps: int | None):
        if isinstance(source, _data.ArrayData):
            return source.batches(batch_size, shuffle, self._shuffle_generator)
        return source.batches(
            steps,
            x_kind=self._x_kind(),
            y_kind=self.loss.target_kind if self.loss is not None else "float",
            device=self._device(),
            dtype=self._dtype(),
        )

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
        metrics = self.compiled_metrics
        for m in metrics:
            m.reset()
        loss_fn = self.loss
        fold = self._fold
        forward = self._forward_logits if fold else self._plain_call
        penalized = self._regularized_layers()
        if ddp is not None:
            forward = ddp.forward(fold)
        loss_sum = _LossSum(self._device())
        seen = 0
        done = 0
        checked = 0
        batch_logs = cbs.train_batch_logs
        batch_begin = cbs.on_train_batch_begin if cbs.wants["on_train_batch_begin"] else None
        scale = _loss_scale(optimizer)
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
                (loss if scale is None else loss * scale).backward()
                optimizer.step()
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

    def _check_batch(self, xb: torch.Tensor, yb: torch.Tensor | None) -> None:
        """First batch of a DataLoader: the checks that arrays get on the whole data up front."""
        if not self._is_built():
            self._build_from(xb)
        _data.check_input_shape(tuple(xb.shape), self._expected_input_shape(), "x batch")
        self._check_arrays(_data.ArrayData(xb, yb, None), "DataLoader batch ")

    # ------------------------------------------------------------------------------------------
    # evaluate / predict
    # ------------------------------------------------------------------------------------------
    def _evaluate_source(
        self,
        source: Any,
        batch_size: int | None,
        cbs: CallbackList | None,
        verbose: int,
        desc: str,
        steps: int | None = None,
    ) -> dict[str, float]:
        was_training = self.training
        self.eval()
        metrics = self.compiled_metrics
        for m in metrics:
            m.reset()
        loss_fn = self.loss
        fold = self._fold
        forward = self._forward_logits if fold else self._plain_call
        penalized = self._regularized_layers()
        loss_sum = _LossSum(self._device())
        seen = 0
        total = source.steps(batch_size) if isinstance(source, _data.ArrayData) else source.steps()
        progress = Progress(verbose, steps or total, desc)
        if cbs is not None:
            cbs.on_test_begin()
        first = not isinstance(source, _data.ArrayData)
        logs: dict[str, float] = {}

        def running() -> dict[str, float]:
            return self._running_logs(loss_sum, seen)

        try:
            with torch.no_grad():
                for step, (xb, yb, wb) in enumerate(self._batches(source, batch_size, False, None)):
                    if steps is not None and step >= steps:
                        break
                    if cbs is not None:
                        cbs.on_test_batch_begin(step)
                    if first:
                        self._check_batch(xb, yb)
                        first = False
                    multi = isinstance(xb, tuple)
                    out = forward(*xb) if multi else forward(xb)
                    loss = loss_fn(yb, out, wb, fold)
                    if penalized:
                        loss = loss + self._penalty(penalized)
                    n = (xb[0] if multi else xb).shape[0]
                    seen += n
                    loss_sum.add(loss, n)
                    for m in metrics:
                        m.update(yb, out, fold)
                    if cbs is not None and cbs.wants["on_test_batch_end"]:
                        cbs.on_test_batch_end(step, running())
                    progress.step(step + 1, running)
            logs = self._running_logs(loss_sum, seen)
        finally:
            self.train(was_training)
            progress.close(logs)
        if cbs is not None:
            cbs.on_test_end(logs)
        return logs

    def evaluate(
        self,
        x: Any = None,
        y: Any = None,
        batch_size: int | None = 32,
        verbose: int | str = "auto",
        sample_weight: Any = None,
        steps: int | None = None,
        callbacks: Iterable[Callback] | None = None,
        return_dict: bool = False,
    ) -> float | list[float] | dict[str, float]:
        """Loss and metrics on the data, in eval mode without gradients.

        Returns the loss alone if there are no metrics, else ``[loss, *metrics]``, or a dict with
        ``return_dict=True`` (as Keras)."""
        self._require_compiled("evaluate")
        verbose = resolve_verbose(verbose)
        _check_int("batch_size", batch_size, 1, allow_none=True)
        _check_int("steps", steps, 1, allow_none=True)
        if _data.is_loader_like(x):
            if y is not None:
                raise ValueError("when x is a DataLoader/Dataset it provides the targets: y=None")
            source: Any = _data.LoaderData(x, batch_size, False, None)
        else:
            source = self._arrays(x, y, sample_weight, "")
            self._prepare_model(source.x)
            source = self._move(source)
            self._check_arrays(source, "")
        cbs = CallbackList(callbacks, self, {"steps": steps, "verbose": verbose})
        logs = self._evaluate_source(source, batch_size, cbs, verbose, "Evaluate", steps)
        if return_dict:
            return logs
        values = list(logs.values())
        return values[0] if len(values) == 1 else values

    def predict(
        self,
        x: Any,
        batch_size: int | None = 32,
        verbose: int | str = "auto",
        steps: int | None = None,
        callbacks: Iterable[Callback] | None = None,
    ) -> Any:
        """Model outputs (probabilities for a softmax/sigmoid model) as NumPy arrays, computed
        in eval mode without gradients, ``batch_size`` samples at a time."""
        verbose = resolve_verbose(verbose)
        _check_int("batch_size", batch_size, 1, allow_none=True)
        _check_int("steps", steps, 1, allow_none=True)
        if _data.is_loader_like(x):
            source: Any = _data.LoaderData(x, batch_size, False, None)
            batches = source.batches(
                None,
                x_kind=self._x_kind(),
                y_kind="float",
                device=self._device(),
                need_y=False,
                dtype=self._dtype(),
            )
            total = source.steps()
        else:
            arr = self._arrays(x, None, None, "", need_y=False, check=False)
            self._prepare_model(arr.x)
            arr = self._move(arr)
            batches = arr.batches(batch_size, False, None)
            total = arr.steps(batch_size)
        cbs = CallbackList(callbacks, self, {"steps": steps, "verbose": verbose})
        progress = Progress(verbose, steps or total, "Predict")
        outputs: list[Any] = []
        was_training = self.training
        self.eval()
        cbs.on_predict_begin()
        try:
            with torch.no_grad():
                for step, (xb, _, _) in enumerate(batches):
                    if steps is not None and step >= steps:
                        break
                    cbs.on_predict_batch_begin(step)
                    out = self._plain_call(*xb) if isinstance(xb, tuple) else self._plain_call(xb)
                    outputs.append(out)
                    cbs.on_predict_batch_end(step, {"outputs": out})
                    progress.step(step + 1)
        finally:
            self.train(was_training)
            progress.close()
        cbs.on_predict_end()
        return _concat_outputs(outputs)

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

    def test_on_batch(
        self, x: Any, y: Any = None, sample_weight: Any = None, return_dict: bool = False
    ) -> float | list[float] | dict[str, float]:
        """Loss (and metrics) on this batch in inference mode (Keras' ``test_on_batch``)."""
        return self.evaluate(
            x, y, batch_size=None, verbose=0, sample_weight=sample_weight, return_dict=return_dict
        )

    def predict_on_batch(self, x: Any) -> Any:
        return self.predict(x, batch_size=None, verbose=0)

    # ------------------------------------------------------------------------------------------
    # weights, summary, save
    # ------------------------------------------------------------------------------------------
    def get_weights(self) -> list[np.ndarray]:
        """All weights (parameters and buffers, in ``state_dict`` order) as NumPy arrays."""
        return [t.detach().cpu().numpy().copy() for t in self._network().state_dict().values()]

    def set_weights(self, weights: Sequence[Any]) -> None:
        state = self._network().state_dict()
        if len(weights) != len(state):
            raise ValueError(f"expected {len(state)} weight arrays, got {len(weights)}")
        new = {}
        for (key, old), value in zip(state.items(), weights, strict=True):
            t = torch.as_tensor(np.asarray(value))
            if tuple(t.shape) != tuple(old.shape):
                raise ValueError(
                    f"weight {key!r} has shape {tuple(old.shape)}, got {tuple(t.shape)}"
                )
            new[key] = t.to(dtype=old.dtype)
        self._network().load_state_dict(new)

    def _snapshot_weights(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().clone() for k, v in self._network().state_dict().items()}

    def _restore_weights(self, state: dict[str, torch.Tensor]) -> None:
        self._network().load_state_dict(state)

    def count_params(self) -> int:
        return sum(count_weights(self._network()))

    def _summary_rows(self) -> list[tuple[str, str, int]]:
        shapes: dict[str, Any] = {}
        net = self._network()
        children = list(net.named_children())
        if self._sample_input is not None:
            hooks = [
                child.register_forward_hook(
                    lambda _m, _i, out, key=name: shapes.__setitem__(
                        key, (None, *out.shape[1:]) if isinstance(out, torch.Tensor) else "?"
                    )
                )
                for name, child in children
            ]
            try:
                self._probe(self._sample_input)
            finally:
                for h in hooks:
                    h.remove()
        return [
            (
                f"{name} ({type(child).__name__})",
                str(shapes.get(name, "?")),
                sum(count_weights(child)),
            )
            for name, child in children
        ]

    def summary(self, print_fn: Callable[[str], Any] | None = print, line_length: int = 80) -> str:
        """Print (with ``print_fn``; ``None`` prints nothing) and return a Keras-like table:
        each layer's name and type, output shape and parameter count, then the totals."""
        rows = self._summary_rows()
        widths = (max(34, line_length * 40 // 80), max(22, line_length * 26 // 80))
        line_length = max(line_length, widths[0] + widths[1] + 12)
        sep = "_" * line_length
        lines = [f'Model: "{self.name}"', sep]
        lines.append(f" {'Layer (type)':<{widths[0]}}{'Output Shape':<{widths[1]}}Param #")
        lines.append("=" * line_length)
        for i, (label, shape, params) in enumerate(rows):
            lines.append(f" {label:<{widths[0] - 1}} {shape:<{widths[1] - 1}} {params:,}")
            if i < len(rows) - 1:
                lines.append("")
        if not rows:
            lines.append(" (no layers)")
        lines.append("=" * line_length)
        trainable, frozen = count_weights(self._network())
        lines.append(f"Total params: {_fmt_count(trainable + frozen)}")
        lines.append(f"Trainable params: {_fmt_count(trainable)}")
        lines.append(f"Non-trainable params: {_fmt_count(frozen)}")
        if not self._is_built():
            lines.append("(the model is not built yet: parameters appear after its first input)")
        lines.append(sep)
        text = "\n".join(lines)
        if print_fn is not None:
            print_fn(text)
        return text

    def _config(self) -> dict[str, Any] | None:
        return None

    def save(self, path: str | os.PathLike[str]) -> None:
        """Save architecture (Sequential), weights, optimizer, compile settings, epochs done and
        random states to ``path``, atomically. See :func:`load_model`."""
        config = self._config()
        compile_config = None
        if self.compiled:
            compile_config = dict(self._compile_config or {})
            opt = self.optimizer
            keras_opt = self._keras_optimizer()
            if keras_opt is not None:
                compile_config["optimizer"] = {
                    "keras": _keras_opt.serialize(keras_opt),
                    "iterations": keras_opt.iterations,
                }
            elif opt is not None:
                compile_config["optimizer"] = _ckpt.optimizer_config(opt, self._optimizer_name)
            elif self._optimizer_name is not None:
                compile_config["optimizer"] = {"name": self._optimizer_name}
            else:
                compile_config["optimizer"] = None
        net = self._network()
        payload = {
            "format": _ckpt.FORMAT,
            "version": _ckpt.VERSION,
            "kind": "sequential" if config is not None else "module",
            "config": None if config is None else _ckpt.dumps(config),
            "module_class": f"{type(net).__module__}.{type(net).__qualname__}",
            "state_dict": net.state_dict(),
            "compile": None if compile_config is None else _ckpt.dumps(compile_config),
            "optimizer_state": None if self.optimizer is None else self.optimizer.state_dict(),
            "epoch": int(self.epoch),
            "rng": _ckpt.rng_state(self._shuffle_generator),
            "torch_version": str(torch.__version__),
        }
        _ckpt.atomic_torch_save(payload, path)

    def _resume(self, path: str | os.PathLike[str]) -> int:
        """Load in place what :meth:`save` wrote (weights, optimizer state, random states);
        returns the epochs it had completed (for :class:`BackupAndRestore`)."""
        path = os.fspath(path)
        ckpt = _ckpt.read_checkpoint(path)
        if not self._is_built():
            raise ValueError(
                f"cannot restore the backup {path!r} into an unbuilt model: build it "
                "(input_shape= or model.build(...)) before fit"
            )
        _load_state(self._network(), ckpt["state_dict"], path)
        state = ckpt.get("optimizer_state")
        if state is not None:
            try:
                self._ensure_optimizer().load_state_dict(state)
            except (ValueError, KeyError, RuntimeError) as exc:
                raise ValueError(
                    f"{path!r}: the saved optimizer state does not fit: {exc}"
                ) from None
        keras_opt = self._keras_optimizer()
        if keras_opt is not None:
            saved = json.loads(ckpt.get("compile") or "{}").get("optimizer") or {}
            keras_opt.restored(int(saved.get("iterations", 0)))
        if ckpt["rng"].get("shuffle") is not None:
            self._shuffle_generator.set_state(ckpt["rng"]["shuffle"])
        _ckpt.restore_rng(ckpt["rng"])
        self.epoch = int(ckpt["epoch"])
        return self.epoch

    def save_weights(self, path: str | os.PathLike[str]) -> None:
        """Save only the weights (``state_dict``), atomically."""
        payload = {
            "format": _ckpt.WEIGHTS_FORMAT,
            "version": _ckpt.VERSION,
            "state_dict": self._network().state_dict(),
        }
        _ckpt.atomic_torch_save(payload, path)

    def load_weights(self, path: str | os.PathLike[str], *, weights_only: bool = True) -> None:
        """Load weights from :meth:`save_weights`, :meth:`save` or a bare ``state_dict`` file."""
        state = _ckpt.read_weights(path, weights_only=weights_only)
        if not self._is_built():
            raise ValueError(
                "build the model (input_shape= or model.build) before loading weights into it"
            )
        _load_state(self._network(), state, os.fspath(path))


def _load_state(net: nn.Module, state: dict[str, Any], path: str) -> None:
    mine = net.state_dict()
    missing = [k for k in mine if k not in state]
    unexpected = [k for k in state if k not in mine]
    wrong = [
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(v.shape)}"
        for k, v in mine.items()
        if k in state and isinstance(state[k], torch.Tensor) and state[k].shape != v.shape
    ]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"missing {missing}")
        if unexpected:
            parts.append(f"unexpected {unexpected}")
        if wrong:
            parts.append(f"shape mismatch {wrong}")
        raise ValueError(f"the weights in {path!r} do not fit this model: {'; '.join(parts)}")
    net.load_state_dict(state)


def _concat_outputs(outputs: list[Any]) -> Any:
    if not outputs:
        return np.zeros((0,), dtype=np.float32)
    first = outputs[0]
    if isinstance(first, torch.Tensor):
        return torch.cat(outputs).cpu().numpy()
    if isinstance(first, (tuple, list)):
        return [torch.cat([o[i] for o in outputs]).cpu().numpy() for i in range(len(first))]
    if isinstance(first, dict):
        return {k: torch.cat([o[k] for o in outputs]).cpu().numpy() for k in first}
    raise ValueError(f"cannot collect model outputs of type {type(first).__name__}")


# ----------------------------------------------------------------------------------------------
# load_model / fit
# ----------------------------------------------------------------------------------------------
def load_model(
    path: str | os.PathLike[str],
    module: nn.Module | None = None,
    *,
    custom_objects: dict[str, Any] | None = None,
    compile: bool = True,  # noqa: A002 - Keras' name
    optimizer: Any = None,
    restore_rng: bool = True,
    weights_only: bool = True,
) -> Model:
    """Load a model saved with ``model.save(path)``.

    A :class:`~optimist.Sequential` is rebuilt from its saved config. Any other model needs the
    module to load into: ``load_model(path, module=MyNet())`` (a plain module is wrapped in
    :class:`Model`). With ``compile`` the optimizer (rebuilt by name, or by class for
    ``torch.optim``/``optimist.optim`` instances; else pass ``optimizer=``), its state, the loss
    and metrics are restored, and ``model.epoch`` tells the epochs completed, so
    ``model.fit(..., initial_epoch=model.epoch, epochs=N)`` resumes. With ``restore_rng`` torch's
    global random state is set back to the saved one (needed for bit-identical resumption with
    dropout); the shuffle generator's state is always restored. ``custom_objects`` maps names
    of custom layers, activations or initializers in a Sequential config to objects.

    Raises ``ValueError`` naming the file for truncated, corrupt or foreign files.
    """
    from optimist.training.sequential import Sequential

    path = os.fspath(path)
    ckpt = _ckpt.read_checkpoint(path, weights_only=weights_only)
    if ckpt["kind"] == "sequential":
        if module is not None:
            raise ValueError(f"{path!r} holds a Sequential model; do not pass module=")
        try:
            config = json.loads(ckpt["config"])
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{path!r}: the model config is not valid JSON ({exc})") from None
        with torch.random.fork_rng(devices=[]):
            model: Model = Sequential.from_config(config, custom_objects=custom_objects)
    else:
        if module is None:
            raise ValueError(
                f"{path!r} holds a {ckpt.get('module_class', 'custom')} model, whose code is not "
                f"saved: pass the module to load into, load_model(path, module=MyNet())"
            )
        model = module if isinstance(module, Model) else Model(module)
    _load_state(model._network(), ckpt["state_dict"], path)

    compile_config = ckpt.get("compile")
    if compile and compile_config:
        _compile_from_checkpoint(model, json.loads(compile_config), ckpt, optimizer, path)
    model.epoch = int(ckpt["epoch"])
    if restore_rng:
        _ckpt.restore_rng(ckpt["rng"])
    return model


def _compile_from_checkpoint(
    model: Model, cc: dict[str, Any], ckpt: dict[str, Any], optimizer: Any, path: str
) -> None:
    loss = _loss_from_config(cc.get("loss"))
    metric_configs = cc.get("metrics", [])
    metrics = [m for m in map(_metric_from_config, metric_configs) if m is not None]
    if loss is None:
        warnings.warn(
            f"{path!r}: the model was compiled with a custom loss, which is not saved; call "
            f"compile() again before fit/evaluate",
            RuntimeWarning,
            stacklevel=3,
        )
    if len(metrics) != len(metric_configs):
        warnings.warn(
            f"{path!r}: custom metrics are not saved and were left out",
            RuntimeWarning,
            stacklevel=3,
        )
    opt_cfg = cc.get("optimizer") or {}
    spec: Any = optimizer
    params = [p for p in model.parameters() if p.requires_grad]
    if spec is None and opt_cfg.get("keras"):
        spec = _keras_opt.deserialize(opt_cfg["keras"])
    elif spec is None and opt_cfg.get("name"):
        spec = opt_cfg["name"]
    elif spec is None and opt_cfg.get("class") and params:
        spec = _ckpt.rebuild_optimizer(opt_cfg, params)
        if spec is None:
            warnings.warn(
                f"{path!r}: optimizer {opt_cfg['class']} cannot be rebuilt from the file; pass "
                f"optimizer= to load_model",
                RuntimeWarning,
                stacklevel=3,
            )
    model.compile(optimizer=spec if spec is not None else "rmsprop", loss=loss, metrics=metrics)
    if spec is None:
        model.optimizer = None
        model._optimizer_spec = None
        model._optimizer_name = None
    state = ckpt.get("optimizer_state")
    if state is not None and model.optimizer is not None:
        try:
            model.optimizer.load_state_dict(state)
        except (ValueError, KeyError, RuntimeError) as exc:
            if optimizer is None:
                raise ValueError(
                    f"{path!r}: the saved optimizer state does not fit: {exc}"
                ) from None
            warnings.warn(
                f"{path!r}: the saved optimizer state does not fit the optimizer passed in and "
                f"was not loaded ({exc})",
                RuntimeWarning,
                stacklevel=3,
            )
    keras_opt = model._keras_optimizer()
    if keras_opt is not None and optimizer is None:
        keras_opt.restored(int(opt_cfg.get("iterations", 0)))
    shuffle_state = ckpt["rng"].get("shuffle")
    if shuffle_state is not None:
        model._shuffle_generator.set_state(shuffle_state)


def _loss_from_config(config: Any) -> Any:
    if config is None or isinstance(config, str):
        return config
    cls = {c.__name__: c for c in _losses.LOSSES.values()}.get(config.get("class"))
    return None if cls is None else cls(**config.get("config", {}))


def _metric_from_config(config: Any) -> Any:
    if config is None or isinstance(config, str):
        return config
    if config.get("class") == "TopKAccuracy":
        return _metrics.TopKAccuracy(k=config["k"], name=config.get("name"))
    return None


def fit(
    module: nn.Module,
    x: Any = None,
    y: Any = None,
    *,
    optimizer: Any = "rmsprop",
    loss: Any = None,
    metrics: Sequence[Any] | None = None,
    **fit_kwargs: Any,
) -> History:
    """Compile and fit any ``torch.nn.Module`` in one call (trained in place)::

        history = optimist.fit(net, x, y, optimizer="adam", loss="mse", epochs=10)

    ``history.model`` is the :class:`Model` used (wrapping ``net``); call its ``evaluate`` /
    ``predict``, or ``fit`` again to continue with the same optimizer state.
    """
    model = module if isinstance(module, Model) else Model(module)
    model.compile(optimizer=optimizer, loss=loss, metrics=metrics)
    return model.fit(x, y, **fit_kwargs)
