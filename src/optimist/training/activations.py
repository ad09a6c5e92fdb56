"""Activation functions by name, as Keras names them.

``get(name_or_callable)`` returns a tensor -> tensor function. ``None`` and ``"linear"`` are the
identity. Every function acts elementwise except ``softmax`` / ``log_softmax``, which act on the
last axis (Keras' default).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

__all__ = [
    "ACTIVATIONS",
    "elu",
    "exponential",
    "gelu",
    "get",
    "hard_sigmoid",
    "leaky_relu",
    "linear",
    "log_softmax",
    "name_of",
    "relu",
    "relu6",
    "selu",
    "sigmoid",
    "silu",
    "softmax",
    "softplus",
    "softsign",
    "tanh",
]


Activation = Callable[[torch.Tensor], torch.Tensor]


def linear(x: torch.Tensor) -> torch.Tensor:
    return x


def relu(x: torch.Tensor) -> torch.Tensor:
    return torch.relu(x)


def relu6(x: torch.Tensor) -> torch.Tensor:
    return F.relu6(x)


def sigmoid(x: torch.Tensor) -> torch.Tensor:
    return torch.sigmoid(x)


def hard_sigmoid(x: torch.Tensor) -> torch.Tensor:
    # Keras 3 definition: relu6(x + 3) / 6
    return F.hardsigmoid(x)


def tanh(x: torch.Tensor) -> torch.Tensor:
    return torch.tanh(x)


def softmax(x: torch.Tensor) -> torch.Tensor:
    return torch.softmax(x, dim=-1)


def log_softmax(x: torch.Tensor) -> torch.Tensor:
    return torch.log_softmax(x, dim=-1)


def gelu(x: torch.Tensor) -> torch.Tensor:
    # Keras' gelu defaults to the exact (erf) form.
    return F.gelu(x)


def elu(x: torch.Tensor) -> torch.Tensor:
    return F.elu(x, alpha=1.0)


def selu(x: torch.Tensor) -> torch.Tensor:
    return F.selu(x)


def softplus(x: torch.Tensor) -> torch.Tensor:
    return F.softplus(x)


def softsign(x: torch.Tensor) -> torch.Tensor:
    return F.softsign(x)


def leaky_relu(x: torch.Tensor) -> torch.Tensor:
    # Keras 3's default negative slope is 0.2.
    return F.leaky_relu(x, negative_slope=0.2)


def silu(x: torch.Tensor) -> torch.Tensor:
    return F.silu(x)


def exponential(x: torch.Tensor) -> torch.Tensor:
    return torch.exp(x)


ACTIVATIONS: dict[str, Activation] = {
    "linear": linear,
    "relu": relu,
    "relu6": relu6,
    "sigmoid": sigmoid,
    "hard_sigmoid": hard_sigmoid,
    "tanh": tanh,
    "softmax": softmax,
    "log_softmax": log_softmax,
    "gelu": gelu,
    "elu": elu,
    "selu": selu,
    "softplus": softplus,
    "softsign": softsign,
    "leaky_relu": leaky_relu,
    "silu": silu,
    "swish": silu,
    "exponential": exponential,
}


def get(activation: str | Activation | None) -> Activation:
    """Resolve an activation given by name, callable or ``None`` (identity)."""
    if activation is None:
        return linear
    if isinstance(activation, str):
        key = activation.lower()
        if key not in ACTIVATIONS:
            valid = ", ".join(sorted(ACTIVATIONS))
            raise ValueError(f"Unknown activation {activation!r}. Valid names: {valid}.")
        return ACTIVATIONS[key]
    if callable(activation):
        return activation
    raise ValueError(
        f"activation must be a name, a callable or None, got {type(activation).__name__}"
    )


def name_of(activation: str | Activation | None) -> str | None:
    """The registered name of an activation, or ``None`` if it is a custom callable."""
    if activation is None:
        return "linear"
    if isinstance(activation, str):
        get(activation)  # validates
        key = activation.lower()
        return "silu" if key == "swish" else key
    for key, fn in ACTIVATIONS.items():
        if fn is activation:
            return key
    return None
