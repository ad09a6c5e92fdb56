"""Preprocessing layers: ``Rescaling`` and ``Normalization`` (with ``adapt``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from optimist.training.layers.base import (
    Layer,
    Shape,
    register_layer,
)


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
        device = None if self.mean is None else self.mean.device  # adapt keeps the layer's
        dtype = torch.get_default_dtype()
        self.mean = torch.as_tensor(mean, dtype=dtype).to(device)
        self.variance = torch.as_tensor(variance, dtype=dtype).to(device)

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
