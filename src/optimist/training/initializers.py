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
from typing import Any, ClassVar

import torch

__all__ = [
    "Constant",
    "GlorotNormal",
    "GlorotUniform",
    "HeNormal",
    "HeUniform",
    "INITIALIZERS",
    "KERAS_CLASSES",
    "KerasInitializer",
    "LecunNormal",
    "LecunUniform",
    "Ones",
    "Orthogonal",
    "RandomNormal",
    "RandomUniform",
    "TruncatedNormal",
    "Zeros",
    "config_of",
    "get",
    "glorot_normal",
    "glorot_uniform",
    "he_normal",
    "he_uniform",
    "initialize",
    "lecun_normal",
    "lecun_uniform",
    "name_of",
    "ones",
    "orthogonal",
    "random_normal",
    "random_uniform",
    "truncated_normal",
    "zeros",
]


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


class KerasInitializer:
    """Keras' initializer objects (``GlorotUniform(seed=1)``...): ``init(shape)`` returns a new
    tensor; layers call :meth:`fill`. With a ``seed`` every call draws the same numbers (from a
    private generator, leaving torch's global one untouched)."""

    rule: ClassVar[Initializer]
    name: ClassVar[str]

    def __init__(self, seed: int | None = None) -> None:
        self.seed = seed

    def _fill(self, t: torch.Tensor, fan_in: int, fan_out: int) -> None:
        type(self).rule(t, fan_in, fan_out)

    def fill(self, t: torch.Tensor, fan_in: int, fan_out: int) -> None:
        if self.seed is None:
            self._fill(t, fan_in, fan_out)
            return
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(self.seed))
            self._fill(t, fan_in, fan_out)

    def __call__(self, shape: Any, dtype: Any = None) -> torch.Tensor:
        shape = tuple(int(d) for d in shape)
        t = torch.empty(shape, dtype=dtype or torch.get_default_dtype())
        fan_in, fan_out = _fans(shape)
        with torch.no_grad():
            self.fill(t, fan_in, fan_out)
        return t

    def get_config(self) -> dict[str, Any]:
        return dict(vars(self))

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


def _fans(shape: tuple[int, ...]) -> tuple[int, int]:
    """Keras' fans: a kernel's (in, out) on its last two axes, times the receptive field."""
    if len(shape) == 0:
        return 1, 1
    if len(shape) == 1:
        return shape[0], shape[0]
    receptive = math.prod(shape[:-2])
    return shape[-2] * receptive, shape[-1] * receptive


def _keras_class(class_name: str, rule: Initializer) -> type[KerasInitializer]:
    return type(
        class_name, (KerasInitializer,), {"rule": staticmethod(rule), "name": rule.__name__}
    )


Zeros = _keras_class("Zeros", zeros)
Ones = _keras_class("Ones", ones)
GlorotUniform = _keras_class("GlorotUniform", glorot_uniform)
GlorotNormal = _keras_class("GlorotNormal", glorot_normal)
HeUniform = _keras_class("HeUniform", he_uniform)
HeNormal = _keras_class("HeNormal", he_normal)
LecunUniform = _keras_class("LecunUniform", lecun_uniform)
LecunNormal = _keras_class("LecunNormal", lecun_normal)


class RandomNormal(KerasInitializer):
    name = "random_normal"

    def __init__(self, mean: float = 0.0, stddev: float = 0.05, seed: int | None = None) -> None:
        super().__init__(seed)
        self.mean, self.stddev = float(mean), float(stddev)

    def _fill(self, t: torch.Tensor, fan_in: int, fan_out: int) -> None:
        t.normal_(self.mean, self.stddev)


class RandomUniform(KerasInitializer):
    name = "random_uniform"

    def __init__(self, minval: float = -0.05, maxval: float = 0.05, seed: int | None = None):
        super().__init__(seed)
        self.minval, self.maxval = float(minval), float(maxval)

    def _fill(self, t: torch.Tensor, fan_in: int, fan_out: int) -> None:
        t.uniform_(self.minval, self.maxval)


class TruncatedNormal(KerasInitializer):
    name = "truncated_normal"

    def __init__(self, mean: float = 0.0, stddev: float = 0.05, seed: int | None = None) -> None:
        super().__init__(seed)
        self.mean, self.stddev = float(mean), float(stddev)

    def _fill(self, t: torch.Tensor, fan_in: int, fan_out: int) -> None:
        _truncated_normal(t, self.stddev)
        t.add_(self.mean)


class Constant(KerasInitializer):
    name = "constant"

    def __init__(self, value: float = 0.0) -> None:
        super().__init__(None)
        self.value = float(value)

    def _fill(self, t: torch.Tensor, fan_in: int, fan_out: int) -> None:
        t.fill_(self.value)


class Orthogonal(KerasInitializer):
    name = "orthogonal"

    def __init__(self, gain: float = 1.0, seed: int | None = None) -> None:
        super().__init__(seed)
        self.gain = float(gain)

    def _fill(self, t: torch.Tensor, fan_in: int, fan_out: int) -> None:
        torch.nn.init.orthogonal_(t, gain=self.gain)


KERAS_CLASSES: dict[str, type[KerasInitializer]] = {
    cls.__name__: cls
    for cls in (
        Zeros,
        Ones,
        Constant,
        GlorotUniform,
        GlorotNormal,
        HeUniform,
        HeNormal,
        LecunUniform,
        LecunNormal,
        RandomNormal,
        RandomUniform,
        TruncatedNormal,
        Orthogonal,
    )
}


def config_of(initializer: Any) -> Any:
    """JSON-able form: a name, or ``{"class_name", "config"}`` for a configured object."""
    if isinstance(initializer, KerasInitializer):
        return {"class_name": type(initializer).__name__, "config": initializer.get_config()}
    if isinstance(initializer, str):
        return initializer
    return getattr(initializer, "__name__", repr(initializer))


def get(initializer: str | Callable[..., Any] | dict[str, Any]) -> Initializer:
    """Resolve an initializer given by name, Keras object or config, or callable (see the
    module docstring)."""
    if isinstance(initializer, dict) and initializer.get("class_name") in KERAS_CLASSES:
        initializer = KERAS_CLASSES[initializer["class_name"]](**initializer.get("config", {}))
    if isinstance(initializer, KerasInitializer):
        return initializer.fill
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
