"""Weight initializers by name, with Keras' formulas and defaults.

An initializer here is called as ``init(tensor, fan_in, fan_out)`` and fills ``tensor`` in place
from torch's global random generator (so ``torch.manual_seed`` makes builds repeatable). Layers
pass the fans Keras would compute for their kernel.

Custom initializers may be:

* a function from ``torch.nn.init`` (e.g. ``torch.nn.init.xavier_uniform_``), called on the
  tensor in place (torch computes the fans from the tensor's own layout);
* any other callable, called Keras-style as ``fn(shape)`` and expected to return an array or
  tensor of that shape.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

Initializer = Callable[[torch.Tensor, int, int], None]

# Keras divides the standard deviation of truncated-normal variance scaling by this constant
# (the standard deviation of a unit normal truncated to [-2, 2]) so the variance comes out right.
_TRUNC_STD = 0.87962566103423978


def _truncated_normal(t: torch.Tensor, std: float) -> None:
    torch.nn.init.trunc_normal_(t, mean=0.0, std=std, a=-2.0 * std, b=2.0 * std)


def zeros(t: torch.Tensor, fan_in: int, fan_out: int) -> None:
    t.zero_()


def ones(t: torch.Tensor, fan_in: int, fan_out: int) -> None:
    t.fill_(1.0)


def glorot_uniform(t: torch.Tensor, fan_in: int, fan_out: int) -> None:
    limit = math.sqrt(6.0 / max(1.0, fan_in + fan_out))
    t.uniform_(-limit, limit)


def glorot_normal(t: torch.Tensor, fan_in: int, fan_out: int) -> None:
    _truncated_normal(t, math.sqrt(2.0 / max(1.0, fan_in + fan_out)) / _TRUNC_STD)


def he_uniform(t: torch.Tensor, fan_in: int, fan_out: int) -> None:
    limit = math.sqrt(6.0 / max(1.0, fan_in))
    t.uniform_(-limit, limit)


def he_normal(t: torch.Tensor, fan_in: int, fan_out: int) -> None:
    _truncated_normal(t, math.sqrt(2.0 / max(1.0, fan_in)) / _TRUNC_STD)


def lecun_uniform(t: torch.Tensor, fan_in: int, fan_out: int) -> None:
    limit = math.sqrt(3.0 / max(1.0, fan_in))
    t.uniform_(-limit, limit)


def lecun_normal(t: torch.Tensor, fan_in: int, fan_out: int) -> None:
    _truncated_normal(t, math.sqrt(1.0 / max(1.0, fan_in)) / _TRUNC_STD)


def random_normal(t: torch.Tensor, fan_in: int, fan_out: int) -> None:
    t.normal_(0.0, 0.05)


def random_uniform(t: torch.Tensor, fan_in: int, fan_out: int) -> None:
    t.uniform_(-0.05, 0.05)


def truncated_normal(t: torch.Tensor, fan_in: int, fan_out: int) -> None:
    _truncated_normal(t, 0.05)


def orthogonal(t: torch.Tensor, fan_in: int, fan_out: int) -> None:
    torch.nn.init.orthogonal_(t)


INITIALIZERS: dict[str, Initializer] = {
    "zeros": zeros,
    "ones": ones,
    "glorot_uniform": glorot_uniform,
    "glorot_normal": glorot_normal,
    "xavier_uniform": glorot_uniform,
    "xavier_normal": glorot_normal,
    "he_uniform": he_uniform,
    "he_normal": he_normal,
    "lecun_uniform": lecun_uniform,
    "lecun_normal": lecun_normal,
    "random_normal": random_normal,
    "random_uniform": random_uniform,
    "uniform": random_uniform,
    "normal": random_normal,
    "truncated_normal": truncated_normal,
    "orthogonal": orthogonal,
}


def get(initializer: str | Callable[..., Any]) -> Initializer:
    """Resolve an initializer given by name or callable (see the module docstring)."""
    if isinstance(initializer, str):
        key = initializer.lower()
        if key not in INITIALIZERS:
            valid = ", ".join(sorted(INITIALIZERS))
            raise ValueError(f"Unknown initializer {initializer!r}. Valid names: {valid}.")
        return INITIALIZERS[key]
    if not callable(initializer):
        raise ValueError(
            f"initializer must be a name or a callable, got {type(initializer).__name__}"
        )
    fn = initializer
    if getattr(fn, "__module__", None) == "torch.nn.init":

        def torch_init(t: torch.Tensor, fan_in: int, fan_out: int) -> None:
            fn(t)

        return torch_init

    def keras_style(t: torch.Tensor, fan_in: int, fan_out: int) -> None:
        value = torch.as_tensor(fn(tuple(t.shape)), dtype=t.dtype)
        if tuple(value.shape) != tuple(t.shape):
            raise ValueError(
                f"initializer {getattr(fn, '__name__', fn)!r} returned shape "
                f"{tuple(value.shape)}, expected {tuple(t.shape)}"
            )
        t.copy_(value)

    return keras_style


def name_of(initializer: str | Callable[..., Any]) -> str | None:
    if isinstance(initializer, str):
        get(initializer)
        return initializer.lower()
    return None


def initialize(t: torch.Tensor, initializer: Initializer, fan_in: int, fan_out: int) -> None:
    with torch.no_grad():
        initializer(t, fan_in, fan_out)
