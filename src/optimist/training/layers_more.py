"""More Keras layers: activation layers (``Softmax``, ``ReLU``, ``LeakyReLU``) and
preprocessing layers (``Rescaling``, ``Normalization`` with ``adapt``).

Re-exported by :mod:`optimist.training.layers` (and so ``optimist.layers``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from optimist.training.layers import Activation, Layer, Shape, register_layer

__all__ = ["Add", "Concatenate", "LeakyReLU", "Normalization", "ReLU", "Rescaling", "Softmax"]


@register_layer
class Softmax(Activation):
    """``softmax(x)`` over ``axis`` (the last by default; then the engine can fold it into a
    cross-entropy loss, as for ``Dense(..., activation="softmax")``)."""

    default_name = "softmax"

    def __init__(self, axis: int = -1, **kwargs: Any) -> None:
        kwargs.pop("activation", None)
        super().__init__("softmax" if axis == -1 else _softmax_on(axis), **kwargs)
        self.axis = int(axis)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.pop("activation", None)
        return {**config, "axis": self.axis}


def _softmax_on(axis: int) -> Any:
    def softmax(x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(x, dim=axis)

    return softmax


@register_layer
class ReLU(Layer):
    """Keras' ReLU: ``x`` above ``threshold``, ``negative_slope * (x - threshold)`` below it,
    capped at ``max_value`` if given."""

    default_name = "re_lu"

    def __init__(
        self,
        max_value: float | None = None,
        negative_slope: float = 0.0,
        threshold: float = 0.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if max_value is not None and max_value < 0:
            raise ValueError(f"max_value of a ReLU layer cannot be negative, got {max_value}")
        if negative_slope < 0:
            raise ValueError(
                f"negative_slope of a ReLU layer cannot be negative, got {negative_slope}"
            )
        self.max_value = max_value
        self.negative_slope = float(negative_slope)
        self.threshold = float(threshold)

    def call(self, x: torch.Tensor) -> torch.Tensor:
        if self.threshold == 0.0 and self.negative_slope == 0.0:
            out = F.relu(x)
        else:
            below = self.negative_slope * (x - self.threshold)
            out = torch.where(x >= self.threshold, x, below)
        if self.max_value is not None:
            out = out.clamp(max=self.max_value)
        return out

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "max_value": self.max_value,
            "negative_slope": self.negative_slope,
            "threshold": self.threshold,
        }


@register_layer
class LeakyReLU(Layer):
    """``x`` for ``x >= 0``, else ``negative_slope * x`` (Keras 3's default slope 0.3)."""

    default_name = "leaky_re_lu"

    def __init__(self, negative_slope: float = 0.3, **kwargs: Any) -> None:
        alpha = kwargs.pop("alpha", None)  # Keras 2's name
        super().__init__(**kwargs)
        self.negative_slope = float(alpha if alpha is not None else negative_slope)
        if self.negative_slope < 0:
            raise ValueError(f"negative_slope must be >= 0, got {self.negative_slope}")

    def call(self, x: torch.Tensor) -> torch.Tensor:
        return F.leaky_relu(x, self.negative_slope)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "negative_slope": self.negative_slope}


@register_layer
class Rescaling(Layer):
    """``x * scale + offset`` (e.g. ``Rescaling(1 / 255)`` for pixel values)."""

    default_name = "rescaling"

    def __init__(self, scale: float, offset: float = 0.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.scale = float(scale)
        self.offset = float(offset)

    def call(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale + self.offset

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "scale": self.scale, "offset": self.offset}


@register_layer
class Normalization(Layer):
    """``(x - mean) / max(sqrt(variance), 1e-7)`` per feature of ``axis``; ``mean`` and
    ``variance`` are given or learned from data with :meth:`adapt` (not trained by ``fit``).
    They are buffers, so they are saved with the model."""

    default_name = "normalization"

    def __init__(
        self,
        axis: int | Sequence[int] | None = -1,
        mean: Any = None,
        variance: Any = None,
        invert: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.axis = (axis,) if isinstance(axis, int) else tuple(axis or ())
        if (mean is None) != (variance is None):
            raise ValueError("Normalization needs both mean= and variance=, or neither")
        self.invert = bool(invert)
        self.register_buffer("mean", None)
        self.register_buffer("variance", None)
        if mean is not None:
            self._set(np.asarray(mean, np.float32), np.asarray(variance, np.float32))

    def _set(self, mean: np.ndarray, variance: np.ndarray) -> None:
        self.mean = torch.as_tensor(mean, dtype=torch.get_default_dtype())
        self.variance = torch.as_tensor(variance, dtype=torch.get_default_dtype())

    def _stat_shape(self, ndim: int) -> list[int]:
        keep = {a % ndim for a in self.axis}
        return [-1 if i in keep else 1 for i in range(ndim)]

    def adapt(self, data: Any) -> None:
        """Learn ``mean`` and ``variance`` (population) over every axis but ``axis``."""
        arr = np.asarray(data.detach().cpu() if isinstance(data, torch.Tensor) else data)
        arr = arr.astype(np.float64)
        if arr.ndim == 0 or arr.shape[0] == 0:
            raise ValueError("Normalization.adapt needs a non-empty batch of samples")
        keep = {a % arr.ndim for a in self.axis}
        reduce = tuple(i for i in range(arr.ndim) if i not in keep)
        self._set(arr.mean(axis=reduce), arr.var(axis=reduce))

    def _build(self, input_shape: Shape) -> None:
        if self.mean is None:
            raise ValueError(
                "Normalization has no mean and variance yet: call layer.adapt(data) or pass "
                "mean= and variance="
            )

    def call(self, x: torch.Tensor) -> torch.Tensor:
        shape = self._stat_shape(x.dim())
        mean = self.mean.to(x.dtype).reshape(shape) if self.mean.dim() else self.mean
        var = self.variance.to(x.dtype).reshape(shape) if self.variance.dim() else self.variance
        std = var.sqrt().clamp_min(1e-7)
        return x * std + mean if self.invert else (x - mean) / std

    def get_config(self) -> dict[str, Any]:
        config = {**super().get_config(), "axis": list(self.axis), "invert": self.invert}
        if self.mean is not None:
            config["mean"] = self.mean.tolist()
            config["variance"] = self.variance.tolist()
        return config


class _Merge(Layer):
    """Layers that combine a list of tensors (functional models)."""

    def build(self, input_shape: Any) -> None:
        shapes = [tuple(s) for s in input_shape]
        if len(shapes) < 2:
            raise ValueError(f"{type(self).__name__} needs a list of at least 2 inputs")
        self._check_shapes(shapes)
        self.built = True
        self.built_input_shape = shapes  # type: ignore[assignment]

    def _check_shapes(self, shapes: list[tuple]) -> None:
        if any(s[1:] != shapes[0][1:] for s in shapes):
            raise ValueError(f"{type(self).__name__} inputs must have equal shapes, got {shapes}")

    def compute_output_shape(self, input_shape: Any) -> Shape:
        return tuple(input_shape[0])

    def forward(self, x: Any) -> torch.Tensor:
        from optimist.training.layers import SymbolicTensor, is_symbolic

        if is_symbolic(x):
            return SymbolicTensor.record(self, x)
        if not isinstance(x, (list, tuple)) or len(x) < 2:
            raise ValueError(f"{type(self).__name__} is called on a list of at least 2 tensors")
        return self.call(list(x))


@register_layer
class Add(_Merge):
    """Element-wise sum of a list of tensors of one shape."""

    default_name = "add"

    def call(self, xs: list[torch.Tensor]) -> torch.Tensor:  # type: ignore[override]
        out = xs[0]
        for x in xs[1:]:
            out = out + x
        return out


@register_layer
class Concatenate(_Merge):
    """Concatenation of a list of tensors along ``axis`` (the last by default)."""

    default_name = "concatenate"

    def __init__(self, axis: int = -1, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.axis = int(axis)

    def _check_shapes(self, shapes: list[tuple]) -> None:
        rank = len(shapes[0])
        axis = self.axis % rank
        for s in shapes:
            same = len(s) == rank and all(
                a == b for k, (a, b) in enumerate(zip(s, shapes[0], strict=True)) if k != axis
            )
            if not same:
                raise ValueError(
                    f"Concatenate inputs must match except along axis {self.axis}, got {shapes}"
                )

    def compute_output_shape(self, input_shape: Any) -> Shape:
        shapes = [tuple(s) for s in input_shape]
        axis = self.axis % len(shapes[0])
        sizes = [s[axis] for s in shapes]
        out = list(shapes[0])
        out[axis] = None if any(d is None for d in sizes) else sum(sizes)
        return tuple(out)

    def call(self, xs: list[torch.Tensor]) -> torch.Tensor:  # type: ignore[override]
        return torch.cat(xs, dim=self.axis)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "axis": self.axis}
