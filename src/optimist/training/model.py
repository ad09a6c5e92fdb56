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

import re
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from optimist.training import data as _data
from optimist.training import losses as _losses
from optimist.training import metrics as _metrics
from optimist.training import placement as _placement
from optimist.training.adapters import DataMixin
from optimist.training.compiling import CompileMixin
from optimist.training.history import History
from optimist.training.inference import InferenceMixin
from optimist.training.layers import Layer, count_weights
from optimist.training.loop import NAN_CHECK_EVERY, TrainLoopMixin
from optimist.training.optimizer_view import keras_view
from optimist.training.saving import SavingMixin, load_model

__all__ = ["NAN_CHECK_EVERY", "Model", "fit", "load_model"]


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def _fmt_count(n: int) -> str:
    size = n * 4.0
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{n:,} ({size:.2f} {unit})"
        size /= 1024
    return f"{n:,}"  # pragma: no cover


class Model(CompileMixin, DataMixin, TrainLoopMixin, InferenceMixin, SavingMixin, nn.Module):
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
        self._placement: torch.device | None = None  # from .to()/.cuda()/.cpu(), see _build_device
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
        inference mode (default: the current mode, which is inference outside ``fit``).
        A Keras-style model (not one wrapping a torch module) takes tensors from any device and
        moves them to its own, as Keras does."""
        if len(args) == 1 and self._input_count() > 1 and isinstance(args[0], (list, tuple, dict)):
            args = tuple(part for part, _, _ in self._input_parts(args[0], "x"))  # model([a, b])
        if args:
            converted, from_numpy = [], False
            device = self._device()
            for i, x in enumerate(args[: self._input_count()]):
                if isinstance(x, (np.ndarray, list)):
                    kind = self._input_kinds()[i]
                    x = _data.to_tensor(x, "x", kind=kind, device=device, dtype=self._dtype())
                    from_numpy = True
                elif isinstance(x, torch.Tensor):
                    if x.is_floating_point() and x.dtype != self._dtype():
                        x = x.to(self._dtype())
                    if not self._wraps and x.device != device:
                        x = x.to(device)  # Keras moves inputs to the model's device
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
        """Materialise lazy parameters with one no-grad, eval-mode forward pass on ``x[:1]``,
        on the device the model builds on (:meth:`_build_device`)."""
        target = self._build_device()
        with _placement.device(target):
            self._probe(_data.map_inputs(lambda t: t.to(target), x))

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

    def _existing_device(self) -> torch.device | None:
        """The device of the first weight that exists (parameter, else buffer), if any."""
        for t in self.parameters():
            if not isinstance(t, nn.parameter.UninitializedParameter):
                return t.device
        for t in self.buffers():
            return t.device
        return None

    def _device(self) -> torch.device:
        """Where the model's weights are, or (before any exists) will be built."""
        return self._existing_device() or self._build_device()

    def _build_device(self) -> torch.device:
        """Where weights built now go: the device given to ``.to()``/``.cuda()``/``.cpu()``
        (remembered, also before the model is built); else that of the weights that already
        exist (a torch module inside keeps its device, and new layers join it); else, for a
        Keras-style model, Keras 3's rule (:func:`optimist.training.placement.get_device`);
        a model wrapping a torch module that has no weights yet builds on the CPU, as torch."""
        if self._placement is not None:
            return self._placement
        existing = self._existing_device()
        if existing is not None:
            return existing
        return torch.device("cpu") if self._wraps else _placement.get_device()

    def to(self, *args: Any, **kwargs: Any) -> Model:
        """``torch.nn.Module.to``; the device is also remembered, so a model not built yet
        builds its weights there (instead of the move being a silent no-op)."""
        device = torch._C._nn._parse_to(*args, **kwargs)[0]
        return self._moved(device, lambda: super(Model, self).to(*args, **kwargs))

    def cuda(self, device: int | torch.device | None = None) -> Model:
        """``torch.nn.Module.cuda``, remembered as :meth:`to` is."""
        index = device.index if isinstance(device, torch.device) else device
        target = torch.device("cuda") if index is None else torch.device("cuda", index)
        return self._moved(target, lambda: super(Model, self).cuda(device))

    def cpu(self) -> Model:
        """``torch.nn.Module.cpu``, remembered as :meth:`to` is."""
        return self._moved(torch.device("cpu"), lambda: super(Model, self).cpu())

    def _moved(self, device: torch.device | None, move: Callable[[], Any]) -> Model:
        if device is not None:
            device = _placement.parse_device(device, "device")  # refuse an absent accelerator
        move()
        if device is not None:
            self._placement = device
        return self

    def _dtype(self) -> torch.dtype:
        """The floating dtype inputs are cast to: the parameters', else torch's default."""
        for t in self.parameters():
            if not isinstance(t, nn.parameter.UninitializedParameter) and t.is_floating_point():
                return t.dtype
        return torch.get_default_dtype()

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

    def _keras_weights(self, trainable: bool) -> list[torch.Tensor]:
        """Parameters as Keras shows them: a ``Dense`` weight as its ``(in, units)`` kernel."""
        views: dict[int, torch.Tensor] = {}
        for m in self.modules():
            if isinstance(m, Layer):
                views.update(m.keras_weights())
        return [views.get(id(p), p) for p in self.parameters() if p.requires_grad == trainable]

    @property
    def trainable_weights(self) -> list[torch.Tensor]:
        """Keras' list: the trainable parameters in Keras' layouts (``Dense``: ``kernel``, a
        view of the ``(units, in)`` parameter; pass ``model.parameters()`` to an optimizer)."""
        return self._keras_weights(True)

    @property
    def non_trainable_weights(self) -> list[torch.Tensor]:
        frozen = self._keras_weights(False)
        return frozen + [b for b in self.buffers() if b.is_floating_point()]

    @property
    def weights(self) -> list[torch.Tensor]:
        return self.trainable_weights + self.non_trainable_weights

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
