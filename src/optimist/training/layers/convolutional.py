"""Convolution layers: ``Conv2D`` (images, channels last by default) and ``Conv1D``
(sequences ``(N, T, C)``), with Keras' ``"same"`` padding rule.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from optimist.training import initializers as _initializers
from optimist.training.layers.base import (
    Layer,
    Shape,
    _activation_config,
    _ActivationMixin,
    _check_choice,
    _initializer_config,
    _pair,
    _positive_int,
    register_layer,
)


def _conv_out(size: int | None, k: int, s: int, d: int, padding: str) -> int | None:
    if size is None:
        return None
    if padding == "same":
        return -(-size // s)
    return (size - d * (k - 1) - 1) // s + 1


def _same_pads(size: int, k: int, s: int, d: int) -> tuple[int, int]:
    # TensorFlow/Keras "same": output ceil(size / s), extra padding goes after (bottom/right).
    out = -(-size // s)
    total = max((out - 1) * s + d * (k - 1) + 1 - size, 0)
    return total // 2, total - total // 2


class _Spatial2D(Layer):
    """Common code for 2D layers: channels-last <-> channels-first and "same" padding."""

    def _init_spatial(self, padding: str, data_format: str) -> None:
        self.padding = _check_choice(padding, ("valid", "same"), "padding")
        self.data_format = _check_choice(
            data_format, ("channels_last", "channels_first"), "data_format"
        )

    def _to_nchw(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4:
            raise ValueError(
                f"{type(self).__name__} expects 4D input (batch, rows, cols, channels) for "
                f"data_format={self.data_format!r}, got shape {tuple(x.shape)}"
            )
        return x.permute(0, 3, 1, 2) if self.data_format == "channels_last" else x

    def _from_nchw(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(0, 2, 3, 1) if self.data_format == "channels_last" else x

    def _hw_c(self, input_shape: Shape) -> tuple[int | None, int | None, int | None]:
        if len(input_shape) != 4:
            raise ValueError(
                f"{type(self).__name__} expects 4D input shapes (batch included), got {input_shape}"
            )
        if self.data_format == "channels_last":
            return input_shape[1], input_shape[2], input_shape[3]
        return input_shape[2], input_shape[3], input_shape[1]

    def _shape_out(self, input_shape: Shape, h: int | None, w: int | None, c: int | None) -> Shape:
        if self.data_format == "channels_last":
            return (input_shape[0], h, w, c)
        return (input_shape[0], c, h, w)

    def _pad_same(
        self,
        x: torch.Tensor,
        kernel: tuple[int, int],
        strides: tuple[int, int],
        dilation: tuple[int, int],
        value: float = 0.0,
    ) -> torch.Tensor:
        top, bottom = _same_pads(x.shape[2], kernel[0], strides[0], dilation[0])
        left, right = _same_pads(x.shape[3], kernel[1], strides[1], dilation[1])
        if top or bottom or left or right:
            x = F.pad(x, (left, right, top, bottom), value=value)
        return x


@register_layer
class Conv2D(_ActivationMixin, _Spatial2D):
    """2D convolution. Input ``(N, H, W, C)`` (channels last, as Keras) unless
    ``data_format="channels_first"``; ``padding`` is ``"valid"`` or ``"same"`` (TensorFlow's rule:
    output size ``ceil(size / stride)``, the odd extra pixel padded at the bottom/right)."""

    default_name = "conv2d"

    def __init__(
        self,
        filters: int,
        kernel_size: int | Sequence[int],
        strides: int | Sequence[int] = (1, 1),
        padding: str = "valid",
        data_format: str = "channels_last",
        dilation_rate: int | Sequence[int] = (1, 1),
        activation: Any = None,
        use_bias: bool = True,
        kernel_initializer: str | Callable[..., Any] = "glorot_uniform",
        bias_initializer: str | Callable[..., Any] = "zeros",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if not isinstance(filters, int) or filters <= 0:
            raise ValueError(f"Conv2D filters must be a positive int, got {filters!r}")
        self.filters = filters
        self.kernel_size = _pair(kernel_size, "kernel_size")
        self.strides = _pair(strides, "strides")
        self.dilation_rate = _pair(dilation_rate, "dilation_rate")
        self._init_spatial(padding, data_format)
        self._set_kernel_options(activation, use_bias, kernel_initializer, bias_initializer)
        self.kernel: nn.Parameter | None = None
        self.bias: nn.Parameter | None = None
        # "same" with stride 1 and an odd effective kernel pads symmetrically: let conv2d do it.
        eff = [d * (k - 1) + 1 for k, d in zip(self.kernel_size, self.dilation_rate, strict=True)]
        self._symmetric_same = (
            self.padding == "same" and self.strides == (1, 1) and all(e % 2 == 1 for e in eff)
        )
        self._conv_padding = tuple(e // 2 for e in eff) if self._symmetric_same else (0, 0)

    def _build(self, input_shape: Shape) -> None:
        _, _, channels = self._hw_c(input_shape)
        if channels is None:
            raise ValueError(f"Conv2D needs a known channel dimension, got {input_shape}")
        kh, kw = self.kernel_size
        fan_in, fan_out = channels * kh * kw, self.filters * kh * kw
        kernel = torch.empty(self.filters, channels, kh, kw)
        _initializers.initialize(kernel, self._kernel_init, fan_in, fan_out)
        self.kernel = nn.Parameter(kernel)
        if self.use_bias:
            bias = torch.empty(self.filters)
            _initializers.initialize(bias, self._bias_init, fan_in, fan_out)
            self.bias = nn.Parameter(bias)

    def compute_output_shape(self, input_shape: Shape) -> Shape:
        h, w, _ = self._hw_c(input_shape)
        (kh, kw), (sh, sw), (dh, dw) = self.kernel_size, self.strides, self.dilation_rate
        return self._shape_out(
            input_shape,
            _conv_out(h, kh, sh, dh, self.padding),
            _conv_out(w, kw, sw, dw, self.padding),
            self.filters,
        )

    def pre_activation(self, x: torch.Tensor) -> torch.Tensor:
        x = self._to_nchw(x)
        if self.padding == "same" and not self._symmetric_same:
            x = self._pad_same(x, self.kernel_size, self.strides, self.dilation_rate)
        y = F.conv2d(
            x, self.kernel, self.bias, self.strides, self._conv_padding, self.dilation_rate
        )
        return self._from_nchw(y)

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "filters": self.filters,
            "kernel_size": list(self.kernel_size),
            "strides": list(self.strides),
            "padding": self.padding,
            "data_format": self.data_format,
            "dilation_rate": list(self.dilation_rate),
            "activation": _activation_config(self._activation_arg),
            "use_bias": self.use_bias,
            "kernel_initializer": _initializer_config(self.kernel_initializer),
            "bias_initializer": _initializer_config(self.bias_initializer),
        }


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
