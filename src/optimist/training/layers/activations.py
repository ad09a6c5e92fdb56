"""Activation layers: ``Softmax``, ``ReLU``, ``LeakyReLU``."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from optimist.training.layers.base import (
    Layer,
    register_layer,
)
from optimist.training.layers.core import Activation


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
