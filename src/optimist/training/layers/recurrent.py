"""Recurrent layers and their wrappers: ``LSTM``, ``GRU``, ``SimpleRNN``, ``TimeDistributed`` and
``Bidirectional``. Input is batch-first ``(N, T, features)``; recurrent kernels use Keras'
``(in, k*units)`` layout.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import torch
from torch import nn

from optimist.training import activations as _activations
from optimist.training import initializers as _initializers
from optimist.training.layers.base import (
    LAYER_CLASSES,
    Layer,
    Shape,
    _activation_config,
    _check_choice,
    _initializer_config,
    register_layer,
)


class _Recurrent(Layer):
    """Shared code for LSTM/GRU over batch-first ``(N, T, features)`` input."""

    gates: ClassVar[int] = 1

    def __init__(
        self,
        units: int,
        activation: Any = "tanh",
        recurrent_activation: Any = "sigmoid",
        use_bias: bool = True,
        kernel_initializer: str | Callable[..., Any] = "glorot_uniform",
        recurrent_initializer: str | Callable[..., Any] = "orthogonal",
        bias_initializer: str | Callable[..., Any] = "zeros",
        return_sequences: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if not isinstance(units, int) or units <= 0:
            raise ValueError(f"{type(self).__name__} units must be a positive int, got {units!r}")
        self.units = units
        self._activation_arg = activation
        self._recurrent_activation_arg = recurrent_activation
        self._act = _activations.get(activation)
        self._rec_act = _activations.get(recurrent_activation)
        # The fused torch kernels implement exactly tanh / sigmoid.
        self._fused = (
            _activations.name_of(activation) == "tanh"
            and _activations.name_of(recurrent_activation) == "sigmoid"
        )
        self.use_bias = bool(use_bias)
        self.kernel_initializer = kernel_initializer
        self.recurrent_initializer = recurrent_initializer
        self.bias_initializer = bias_initializer
        self.return_sequences = bool(return_sequences)
        self.kernel: nn.Parameter | None = None
        self.recurrent_kernel: nn.Parameter | None = None
        self.bias: nn.Parameter | None = None

    def _bias_shape(self) -> tuple[int, ...]:
        return (self.gates * self.units,)

    def _build(self, input_shape: Shape) -> None:
        if len(input_shape) != 3 or input_shape[-1] is None:
            raise ValueError(
                f"{type(self).__name__} expects input of shape (batch, timesteps, features) with "
                f"known features, got {input_shape}"
            )
        n_in, g = input_shape[-1], self.gates * self.units
        kernel = torch.empty(n_in, g)
        _initializers.initialize(kernel, _initializers.get(self.kernel_initializer), n_in, g)
        rec = torch.empty(self.units, g)
        _initializers.initialize(rec, _initializers.get(self.recurrent_initializer), self.units, g)
        self.kernel = nn.Parameter(kernel)
        self.recurrent_kernel = nn.Parameter(rec)
        if self.use_bias:
            bias = torch.empty(self._bias_shape())
            _initializers.initialize(bias, _initializers.get(self.bias_initializer), n_in, g)
            self._adjust_bias(bias)
            self.bias = nn.Parameter(bias)

    def _adjust_bias(self, bias: torch.Tensor) -> None:
        pass

    def compute_output_shape(self, input_shape: Shape) -> Shape:
        if self.return_sequences:
            return (input_shape[0], input_shape[1], self.units)
        return (input_shape[0], self.units)

    def call(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 3:
            raise ValueError(
                f"{type(self).__name__} expects input (batch, timesteps, features), got shape "
                f"{tuple(x.shape)}"
            )
        seq = self._fused_call(x) if self._fused else self._loop_call(x)
        return seq if self.return_sequences else seq[:, -1]

    def _fused_call(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def _loop_call(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "units": self.units,
            "activation": _activation_config(self._activation_arg),
            "recurrent_activation": _activation_config(self._recurrent_activation_arg),
            "use_bias": self.use_bias,
            "kernel_initializer": _initializer_config(self.kernel_initializer),
            "recurrent_initializer": _initializer_config(self.recurrent_initializer),
            "bias_initializer": _initializer_config(self.bias_initializer),
            "return_sequences": self.return_sequences,
        }


@register_layer
class LSTM(_Recurrent):
    """Long short-term memory layer (Keras gate order i, f, c, o; ``unit_forget_bias`` sets the
    forget-gate bias to 1). Parameters: ``kernel (in, 4u)``, ``recurrent_kernel (u, 4u)``,
    ``bias (4u)``. Uses PyTorch's fused LSTM kernel for the default tanh/sigmoid activations."""

    default_name = "lstm"
    gates = 4

    def __init__(self, units: int, *args: Any, unit_forget_bias: bool = True, **kwargs: Any):
        super().__init__(units, *args, **kwargs)
        self.unit_forget_bias = bool(unit_forget_bias)

    def _adjust_bias(self, bias: torch.Tensor) -> None:
        if self.unit_forget_bias:
            bias[self.units : 2 * self.units] = 1.0

    def _fused_call(self, x: torch.Tensor) -> torch.Tensor:
        h0 = x.new_zeros(1, x.shape[0], self.units)
        params = [self.kernel.t(), self.recurrent_kernel.t()]
        if self.bias is not None:
            params += [self.bias, torch.zeros_like(self.bias)]
        out, _, _ = torch.lstm(
            x, (h0, h0), params, self.bias is not None, 1, 0.0, self.training, False, True
        )
        return out

    def _loop_call(self, x: torch.Tensor) -> torch.Tensor:
        xw = x @ self.kernel
        if self.bias is not None:
            xw = xw + self.bias
        h = x.new_zeros(x.shape[0], self.units)
        c = h
        outputs = []
        for t in range(x.shape[1]):
            z = xw[:, t] + h @ self.recurrent_kernel
            i, f, g, o = z.chunk(4, dim=-1)
            c = self._rec_act(f) * c + self._rec_act(i) * self._act(g)
            h = self._rec_act(o) * self._act(c)
            outputs.append(h)
        return torch.stack(outputs, dim=1)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "unit_forget_bias": self.unit_forget_bias}


@register_layer
class GRU(_Recurrent):
    """Gated recurrent unit, Keras' default ``reset_after=True`` form (gate order z, r, h).
    Parameters: ``kernel (in, 3u)``, ``recurrent_kernel (u, 3u)``, ``bias (2, 3u)`` (input and
    recurrent biases). Uses PyTorch's fused GRU kernel for the default activations."""

    default_name = "gru"
    gates = 3

    def _bias_shape(self) -> tuple[int, ...]:
        return (2, 3 * self.units)

    @staticmethod
    def _to_torch_order(w: torch.Tensor, units: int) -> torch.Tensor:
        # Keras (z, r, h) -> torch (r, z, n) along the last axis.
        return torch.cat([w[..., units : 2 * units], w[..., :units], w[..., 2 * units :]], dim=-1)

    def _fused_call(self, x: torch.Tensor) -> torch.Tensor:
        u = self.units
        h0 = x.new_zeros(1, x.shape[0], u)
        params = [
            self._to_torch_order(self.kernel, u).t(),
            self._to_torch_order(self.recurrent_kernel, u).t(),
        ]
        if self.bias is not None:
            params += [
                self._to_torch_order(self.bias[0], u),
                self._to_torch_order(self.bias[1], u),
            ]
        out, _ = torch.gru(x, h0, params, self.bias is not None, 1, 0.0, self.training, False, True)
        return out

    def _loop_call(self, x: torch.Tensor) -> torch.Tensor:
        u = self.units
        xw = x @ self.kernel
        if self.bias is not None:
            xw = xw + self.bias[0]
        h = x.new_zeros(x.shape[0], u)
        outputs = []
        for t in range(x.shape[1]):
            inner = h @ self.recurrent_kernel
            if self.bias is not None:
                inner = inner + self.bias[1]
            xz, xr, xh = xw[:, t].split(u, dim=-1)
            hz, hr, hh = inner.split(u, dim=-1)
            z = self._rec_act(xz + hz)
            r = self._rec_act(xr + hr)
            candidate = self._act(xh + r * hh)
            h = z * h + (1.0 - z) * candidate
            outputs.append(h)
        return torch.stack(outputs, dim=1)


@register_layer
class SimpleRNN(_Recurrent):
    """Fully connected recurrence ``h_t = activation(x_t @ kernel + h_{t-1} @ recurrent_kernel +
    bias)`` (Keras' layouts ``kernel (in, u)``, ``recurrent_kernel (u, u)``); PyTorch's fused
    kernel for ``tanh``/``relu``."""

    default_name = "simple_rnn"
    gates = 1

    def __init__(self, units: int, activation: Any = "tanh", **kwargs: Any) -> None:
        kwargs.setdefault("recurrent_activation", "sigmoid")  # unused; kept for the config
        super().__init__(units, activation, **kwargs)
        self._fused_name = {"tanh": "tanh", "relu": "relu"}.get(str(_activation_config(activation)))
        self._fused = self._fused_name is not None

    def _fused_call(self, x: torch.Tensor) -> torch.Tensor:
        h0 = x.new_zeros(1, x.shape[0], self.units)
        params = [self.kernel.t(), self.recurrent_kernel.t()]
        if self.bias is not None:
            params += [self.bias, torch.zeros_like(self.bias)]
        rnn = torch.rnn_tanh if self._fused_name == "tanh" else torch.rnn_relu
        out, _ = rnn(x, h0, params, self.bias is not None, 1, 0.0, self.training, False, True)
        return out

    def _loop_call(self, x: torch.Tensor) -> torch.Tensor:
        xw = x @ self.kernel
        if self.bias is not None:
            xw = xw + self.bias
        h = x.new_zeros(x.shape[0], self.units)
        outputs = []
        for t in range(x.shape[1]):
            h = self._act(xw[:, t] + h @ self.recurrent_kernel)
            outputs.append(h)
        return torch.stack(outputs, dim=1)


def _layer_config(layer: Layer) -> dict[str, Any]:
    if type(layer).__name__ not in LAYER_CLASSES:
        raise ValueError(f"cannot describe the unregistered layer {type(layer).__name__}")
    return {"class_name": type(layer).__name__, "config": layer.get_config()}


def _layer_from(spec: Any) -> Layer:
    if isinstance(spec, dict):
        cls = LAYER_CLASSES.get(spec.get("class_name", ""))
        if cls is None:
            raise ValueError(f"unknown layer class {spec.get('class_name')!r}")
        return cls.from_config(dict(spec.get("config", {})))
    if not isinstance(spec, Layer):
        raise ValueError(f"expected an optimist layer, got {type(spec).__name__}")
    return spec


@register_layer
class TimeDistributed(Layer):
    """Applies ``layer`` to every time step of ``(N, T, ...)`` (one call on ``(N*T, ...)``)."""

    default_name = "time_distributed"

    def __init__(self, layer: Layer | dict[str, Any], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.layer = _layer_from(layer)

    def _build(self, input_shape: Shape) -> None:
        self.layer.build((None, *input_shape[2:]))

    def compute_output_shape(self, input_shape: Shape) -> Shape:
        inner = self.layer.compute_output_shape((None, *input_shape[2:]))
        return (input_shape[0], input_shape[1], *inner[1:])

    def call(self, x: torch.Tensor) -> torch.Tensor:
        n, t = x.shape[:2]
        y = self.layer(x.reshape(n * t, *x.shape[2:]))
        return y.reshape(n, t, *y.shape[1:])

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "layer": _layer_config(self.layer)}


@register_layer
class Bidirectional(Layer):
    """Runs a recurrent ``layer`` forwards and a copy of it backwards in time and merges the two
    (``merge_mode``: ``"concat"``, ``"sum"``, ``"mul"``, ``"ave"``); with
    ``return_sequences`` the backward outputs are put back in time order, as in Keras."""

    default_name = "bidirectional"

    def __init__(
        self,
        layer: Layer | dict[str, Any],
        merge_mode: str = "concat",
        backward_layer: Layer | dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.forward_layer = _layer_from(layer)
        if not isinstance(self.forward_layer, _Recurrent):
            raise ValueError(f"Bidirectional wraps a recurrent layer, got {type(layer).__name__}")
        self.merge_mode = _check_choice(merge_mode, ("concat", "sum", "mul", "ave"), "merge_mode")
        if backward_layer is None:
            config = dict(self.forward_layer.get_config())
            config["name"] = None
            backward_layer = type(self.forward_layer).from_config(config)
        self.backward_layer = _layer_from(backward_layer)

    def _build(self, input_shape: Shape) -> None:
        self.forward_layer.build(input_shape)
        self.backward_layer.build(input_shape)

    def compute_output_shape(self, input_shape: Shape) -> Shape:
        shape = self.forward_layer.compute_output_shape(input_shape)
        if self.merge_mode == "concat":
            return (*shape[:-1], 2 * shape[-1])
        return shape

    def call(self, x: torch.Tensor) -> torch.Tensor:
        ahead = self.forward_layer(x)
        back = self.backward_layer(x.flip(1))
        if self.forward_layer.return_sequences:
            back = back.flip(1)
        if self.merge_mode == "concat":
            return torch.cat([ahead, back], dim=-1)
        if self.merge_mode == "sum":
            return ahead + back
        if self.merge_mode == "mul":
            return ahead * back
        return (ahead + back) / 2

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "layer": _layer_config(self.forward_layer),
            "backward_layer": _layer_config(self.backward_layer),
            "merge_mode": self.merge_mode,
        }
