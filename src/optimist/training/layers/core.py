"""Core layers: ``Dense``, ``Activation``, ``Dropout``, ``Flatten``,
``Reshape``, ``Embedding``.
"""

from __future__ import annotations

import math
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
    _initializer_config,
    register_layer,
)


@register_layer
class Dense(_ActivationMixin, Layer):
    """Fully connected layer ``activation(x @ kernel + bias)`` on the last axis.

    The parameter is :attr:`weight`, stored as ``(units, in)`` like ``nn.Linear``'s (its
    backward matmuls are faster in that layout) and applied with ``F.linear``. Keras' view,
    :attr:`kernel`, is ``(in, units)``: a view of ``weight`` (writes through, gradients flow
    back to ``weight``), and it is what ``get_weights``/``set_weights``, ``state_dict``,
    ``model.save``/``load_model`` and the regularizers see (state-dict key ``kernel``).
    Initializers draw the ``(in, units)`` kernel as Keras does, so a seed gives Keras' numbers.
    """

    default_name = "dense"

    def __init__(
        self,
        units: int,
        activation: str | Callable[[torch.Tensor], torch.Tensor] | None = None,
        use_bias: bool = True,
        kernel_initializer: str | Callable[..., Any] = "glorot_uniform",
        bias_initializer: str | Callable[..., Any] = "zeros",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if not isinstance(units, int) or isinstance(units, bool) or units <= 0:
            raise ValueError(f"Dense units must be a positive int, got {units!r}")
        self.units = units
        self._set_kernel_options(activation, use_bias, kernel_initializer, bias_initializer)
        self.weight: nn.Parameter | None = None
        self.bias: nn.Parameter | None = None

    def _build(self, input_shape: Shape) -> None:
        fan_in = input_shape[-1]
        if fan_in is None:
            raise ValueError(f"Dense needs a known last input dimension, got {input_shape}")
        kernel = torch.empty(fan_in, self.units)
        _initializers.initialize(kernel, self._kernel_init, fan_in, self.units)
        self.weight = nn.Parameter(kernel.t().contiguous())
        if self.use_bias:
            bias = torch.empty(self.units)
            _initializers.initialize(bias, self._bias_init, fan_in, self.units)
            self.bias = nn.Parameter(bias)

    def compute_output_shape(self, input_shape: Shape) -> Shape:
        return (*input_shape[:-1], self.units)

    @property
    def kernel(self) -> torch.Tensor | None:
        """Keras' ``(in, units)`` kernel: ``weight.t()``, the same tensor object on every read
        (so ``model.trainable_weights == [dense.kernel, dense.bias]``) until ``weight`` moves."""
        weight = self.weight
        if weight is None:
            return None
        view = self.__dict__.get("_kernel_view")
        if (
            view is None
            or view._base is not weight
            or view.data_ptr() != weight.data_ptr()
            or view.requires_grad != weight.requires_grad
        ):
            with torch.enable_grad():  # a view made under no_grad would cut the gradient
                view = weight.t()
            self.__dict__["_kernel_view"] = view
        return view

    def keras_weights(self) -> dict[int, torch.Tensor]:
        return {} if self.weight is None else {id(self.weight): self.kernel}

    def __getstate__(self) -> dict[str, Any]:
        state = dict(super().__getstate__())
        state.pop("_kernel_view", None)  # a view is no graph leaf: deepcopy/pickle refuse it
        return state

    def _save_to_state_dict(self, destination: Any, prefix: str, keep_vars: bool) -> None:
        own: dict[str, Any] = {}
        super()._save_to_state_dict(own, prefix, keep_vars)
        for key, value in own.items():  # weight -> kernel in place, so Keras' order stays
            if key == prefix + "weight":
                key, value = prefix + "kernel", value.t()
            destination[key] = value

    def _load_from_state_dict(self, state_dict: Any, prefix: str, *args: Any) -> None:
        # torch's load_state_dict hands each module its own copy of the dict
        kernel = state_dict.pop(prefix + "kernel", None)
        if isinstance(kernel, torch.Tensor) and prefix + "weight" not in state_dict:
            state_dict[prefix + "weight"] = kernel.t() if kernel.dim() == 2 else kernel
        elif kernel is not None:
            state_dict[prefix + "kernel"] = kernel
        super()._load_from_state_dict(state_dict, prefix, *args)

    def pre_activation(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias)

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "units": self.units,
            "activation": _activation_config(self._activation_arg),
            "use_bias": self.use_bias,
            "kernel_initializer": _initializer_config(self.kernel_initializer),
            "bias_initializer": _initializer_config(self.bias_initializer),
        }


@register_layer
class Activation(_ActivationMixin, Layer):
    """Applies an activation function (by name or callable)."""

    default_name = "activation"

    def __init__(self, activation: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._set_activation(activation)

    def pre_activation(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "activation": _activation_config(self._activation_arg)}


@register_layer
class Dropout(Layer):
    """Zeroes a fraction ``rate`` of the inputs while training (scaled by 1/(1-rate))."""

    default_name = "dropout"

    def __init__(self, rate: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        rate = float(rate)
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"Dropout rate must be in [0, 1), got {rate}")
        self.rate = rate

    def call(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.rate == 0.0:
            return x
        return F.dropout(x, self.rate, True)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "rate": self.rate}


@register_layer
class Flatten(Layer):
    """Flattens everything but the batch dimension (channels-last order, as Keras)."""

    default_name = "flatten"

    def call(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0], -1)

    def compute_output_shape(self, input_shape: Shape) -> Shape:
        rest = input_shape[1:]
        if any(d is None for d in rest):
            return (input_shape[0], None)
        return (input_shape[0], math.prod(rest))  # type: ignore[arg-type]


@register_layer
class Reshape(Layer):
    """Reshapes to ``target_shape`` (batch dimension excluded; one entry may be -1)."""

    default_name = "reshape"

    def __init__(self, target_shape: Sequence[int], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.target_shape = tuple(int(d) for d in target_shape)
        if sum(d == -1 for d in self.target_shape) > 1:
            raise ValueError(f"Reshape target_shape may contain at most one -1: {target_shape}")

    def call(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0], *self.target_shape)

    def compute_output_shape(self, input_shape: Shape) -> Shape:
        if -1 not in self.target_shape:
            return (input_shape[0], *self.target_shape)
        rest = input_shape[1:]
        if any(d is None for d in rest):
            return (input_shape[0], *(None if d == -1 else d for d in self.target_shape))
        known = math.prod(d for d in self.target_shape if d != -1)
        missing = math.prod(rest) // known  # type: ignore[arg-type]
        return (input_shape[0], *(missing if d == -1 else d for d in self.target_shape))

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "target_shape": list(self.target_shape)}


@register_layer
class Embedding(Layer):
    """Maps integer indices in ``[0, input_dim)`` to vectors of size ``output_dim``."""

    default_name = "embedding"

    def __init__(
        self,
        input_dim: int,
        output_dim: int,
        embeddings_initializer: str | Callable[..., Any] = "uniform",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if input_dim <= 0 or output_dim <= 0:
            raise ValueError(
                f"Embedding input_dim and output_dim must be positive, got {input_dim}, "
                f"{output_dim}"
            )
        self.input_dim = int(input_dim)
        self.output_dim = int(output_dim)
        self.embeddings_initializer = embeddings_initializer
        self._init = _initializers.get(embeddings_initializer)
        self.embeddings: nn.Parameter | None = None

    def _build(self, input_shape: Shape) -> None:
        table = torch.empty(self.input_dim, self.output_dim)
        _initializers.initialize(table, self._init, self.input_dim, self.output_dim)
        self.embeddings = nn.Parameter(table)

    def call(self, x: torch.Tensor) -> torch.Tensor:
        if x.is_floating_point():
            x = x.long()
        return F.embedding(x, self.embeddings)

    def compute_output_shape(self, input_shape: Shape) -> Shape:
        return (*input_shape, self.output_dim)

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "input_dim": self.input_dim,
            "output_dim": self.output_dim,
            "embeddings_initializer": _initializer_config(self.embeddings_initializer),
        }
