"""``BatchNormalization`` (Keras' momentum and epsilon conventions)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from optimist.training.layers.base import (
    Layer,
    Shape,
    register_layer,
)


@register_layer
class BatchNormalization(Layer):
    """Batch normalization over ``axis`` (default last, i.e. channels-last features).

    Keras conventions: ``momentum=0.99`` is the weight of the *old* moving statistic and
    ``epsilon=1e-3``. Trainable ``gamma``/``beta``; ``moving_mean``/``moving_variance`` are buffers
    (counted as non-trainable weights). As in PyTorch, the moving variance is updated with the
    unbiased batch variance (Keras uses the biased one: a factor ``n / (n - 1)`` apart).
    """

    default_name = "batch_normalization"

    def __init__(
        self,
        axis: int = -1,
        momentum: float = 0.99,
        epsilon: float = 1e-3,
        center: bool = True,
        scale: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"BatchNormalization momentum must be in [0, 1), got {momentum}")
        if epsilon <= 0:
            raise ValueError(f"BatchNormalization epsilon must be positive, got {epsilon}")
        self.axis = int(axis)
        self.momentum = float(momentum)
        self.epsilon = float(epsilon)
        self.center = bool(center)
        self.scale = bool(scale)
        self.gamma: nn.Parameter | None = None
        self.beta: nn.Parameter | None = None

    def _build(self, input_shape: Shape) -> None:
        features = input_shape[self.axis]
        if self.axis == 0 or self.axis == -len(input_shape) or features is None:
            raise ValueError(
                f"BatchNormalization axis {self.axis} must name a known, non-batch dimension of "
                f"{input_shape}"
            )
        if self.scale:
            self.gamma = nn.Parameter(torch.ones(features))
        if self.center:
            self.beta = nn.Parameter(torch.zeros(features))
        self.register_buffer("moving_mean", torch.zeros(features))
        self.register_buffer("moving_variance", torch.ones(features))

    def call(self, x: torch.Tensor) -> torch.Tensor:
        last = self.axis in (-1, x.dim() - 1)
        moved = x if last else x.movedim(self.axis, -1)
        shape = moved.shape
        y = F.batch_norm(
            moved.reshape(-1, shape[-1]),
            self.moving_mean,
            self.moving_variance,
            self.gamma,
            self.beta,
            self.training,
            1.0 - self.momentum,
            self.epsilon,
        ).reshape(shape)
        return y if last else y.movedim(-1, self.axis)

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "axis": self.axis,
            "momentum": self.momentum,
            "epsilon": self.epsilon,
            "center": self.center,
            "scale": self.scale,
        }
