"""Sequence layers Keras programs use besides LSTM/GRU: ``Conv1D``, ``SimpleRNN``, and the
wrappers ``TimeDistributed`` and ``Bidirectional``. Input is batch-first ``(N, T, features)``.

Re-exported by :mod:`optimist.training.layers` (and so ``optimist.layers``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from optimist.training import initializers as _initializers
from optimist.training.layers import (
    LAYER_CLASSES,
    Layer,
    Shape,
    _activation_config,
    _ActivationMixin,
    _check_choice,
    _conv_out,
    _initializer_config,
    _Recurrent,
    _same_pads,
    register_layer,
)

__all__ = ["Bidirectional", "Conv1D", "SimpleRNN", "TimeDistributed"]


def _positive_int(value: Any, what: str) -> int:
    if isinstance(value, (list, tuple)) and len(value) == 1:
        value = value[0]
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{what} must be a positive int, got {value!r}")
    return value


@register_layer
class Conv1D(_ActivationMixin, Layer):
    """1D convolution over ``(N, T, C)`` (channels last). ``padding``: ``"valid"``, ``"same"``
    (TensorFlow's rule, as Conv2D) or ``"causal"`` (left padding: output t sees inputs <= t).
    ``kernel`` uses PyTorch's ``(filters, in, k)`` layout."""

    default_name = "conv1d"

    def __init__(
        self,
        filters: int,
        kernel_size: int,
        strides: int = 1,
        padding: str = "valid",
        dilation_rate: int = 1,
        activation: Any = None,
        use_bias: bool = True,
        kernel_initializer: str | Callable[..., Any] = "glorot_uniform",
        bias_initializer: str | Callable[..., Any] = "zeros",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.filters = _positive_int(filters, "Conv1D filters")
        self.kernel_size = _positive_int(kernel_size, "kernel_size")
        self.strides = _positive_int(strides, "strides")
        self.dilation_rate = _positive_int(dilation_rate, "dilation_rate")
        self.padding = _check_choice(padding, ("valid", "same", "causal"), "padding")
        self._set_activation(activation)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = kernel_initializer
        self.bias_initializer = bias_initializer
        self.kernel: nn.Parameter | None = None
        self.bias: nn.Parameter | None = None

    def _build(self, input_shape: Shape) -> None:
        if len(input_shape) != 3 or input_shape[-1] is None:
            raise ValueError(f"Conv1D expects input (batch, steps, channels), got {input_shape}")
        channels, k = input_shape[-1], self.kernel_size
        fan_in, fan_out = channels * k, self.filters * k
        kernel = torch.empty(self.filters, channels, k)
        _initializers.initialize(
            kernel, _initializers.get(self.kernel_initializer), fan_in, fan_out
        )
        self.kernel = nn.Parameter(kernel)
        if self.use_bias:
            bias = torch.empty(self.filters)
            _initializers.initialize(
                bias, _initializers.get(self.bias_initializer), fan_in, fan_out
            )
            self.bias = nn.Parameter(bias)

    def compute_output_shape(self, input_shape: Shape) -> Shape:
        padding = "same" if self.padding == "causal" and self.strides == 1 else self.padding
        if self.padding == "causal":
            steps = input_shape[1]
            return (
                input_shape[0],
                None if steps is None else -(-steps // self.strides),
                self.filters,
            )
        size = _conv_out(
            input_shape[1], self.kernel_size, self.strides, self.dilation_rate, padding
        )
        return (input_shape[0], size, self.filters)

    def pre_activation(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 3:
            raise ValueError(f"Conv1D expects input (batch, steps, channels), got {tuple(x.shape)}")
        x = x.transpose(1, 2)
        k, s, d = self.kernel_size, self.strides, self.dilation_rate
        if self.padding == "same":
            x = F.pad(x, _same_pads(x.shape[-1], k, s, d))
        elif self.padding == "causal":
            x = F.pad(x, (d * (k - 1), 0))
        return F.conv1d(x, self.kernel, self.bias, s, 0, d).transpose(1, 2)

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "filters": self.filters,
            "kernel_size": self.kernel_size,
            "strides": self.strides,
            "padding": self.padding,
            "dilation_rate": self.dilation_rate,
            "activation": _activation_config(self._activation_arg),
            "use_bias": self.use_bias,
            "kernel_initializer": _initializer_config(self.kernel_initializer),
            "bias_initializer": _initializer_config(self.bias_initializer),
        }


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
