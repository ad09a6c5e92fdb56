"""2D pooling layers: max/average pooling and their global forms."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from optimist.training.layers.base import (
    Shape,
    _pair,
    register_layer,
)
from optimist.training.layers.convolutional import _conv_out, _Spatial2D


class _Pooling2D(_Spatial2D):
    def __init__(
        self,
        pool_size: int | Sequence[int] = (2, 2),
        strides: int | Sequence[int] | None = None,
        padding: str = "valid",
        data_format: str = "channels_last",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.pool_size = _pair(pool_size, "pool_size")
        self.strides = self.pool_size if strides is None else _pair(strides, "strides")
        self._init_spatial(padding, data_format)

    def compute_output_shape(self, input_shape: Shape) -> Shape:
        h, w, c = self._hw_c(input_shape)
        (ph, pw), (sh, sw) = self.pool_size, self.strides
        return self._shape_out(
            input_shape,
            _conv_out(h, ph, sh, 1, self.padding),
            _conv_out(w, pw, sw, 1, self.padding),
            c,
        )

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "pool_size": list(self.pool_size),
            "strides": list(self.strides),
            "padding": self.padding,
            "data_format": self.data_format,
        }


@register_layer
class MaxPooling2D(_Pooling2D):
    """2D max pooling (``strides`` default to ``pool_size``; channels last by default)."""

    default_name = "max_pooling2d"

    def call(self, x: torch.Tensor) -> torch.Tensor:
        x = self._to_nchw(x)
        if self.padding == "same":
            x = self._pad_same(x, self.pool_size, self.strides, (1, 1), value=-math.inf)
        return self._from_nchw(F.max_pool2d(x, self.pool_size, self.strides))


@register_layer
class AveragePooling2D(_Pooling2D):
    """2D average pooling; with ``padding="same"`` the padded cells are not averaged (Keras)."""

    default_name = "average_pooling2d"

    def call(self, x: torch.Tensor) -> torch.Tensor:
        x = self._to_nchw(x)
        if self.padding == "same":
            ones = torch.ones_like(x[:1, :1])
            x = self._pad_same(x, self.pool_size, self.strides, (1, 1))
            ones = self._pad_same(ones, self.pool_size, self.strides, (1, 1))
            y = F.avg_pool2d(x, self.pool_size, self.strides)
            y = y / F.avg_pool2d(ones, self.pool_size, self.strides)
        else:
            y = F.avg_pool2d(x, self.pool_size, self.strides)
        return self._from_nchw(y)


class _GlobalPooling2D(_Spatial2D):
    def __init__(self, data_format: str = "channels_last", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._init_spatial("valid", data_format)

    def _dims(self) -> tuple[int, int]:
        return (1, 2) if self.data_format == "channels_last" else (2, 3)

    def compute_output_shape(self, input_shape: Shape) -> Shape:
        _, _, c = self._hw_c(input_shape)
        return (input_shape[0], c)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "data_format": self.data_format}


@register_layer
class GlobalAveragePooling2D(_GlobalPooling2D):
    """Mean over the spatial dimensions: ``(N, H, W, C) -> (N, C)``."""

    default_name = "global_average_pooling2d"

    def call(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=self._dims())


@register_layer
class GlobalMaxPooling2D(_GlobalPooling2D):
    """Max over the spatial dimensions: ``(N, H, W, C) -> (N, C)``."""

    default_name = "global_max_pooling2d"

    def call(self, x: torch.Tensor) -> torch.Tensor:
        return x.amax(dim=self._dims())
