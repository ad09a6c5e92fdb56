"""Methods: an optimizer plus a batch regime, defined once in :data:`METHODS`.

A *method* is what a course calls "an optimization algorithm": full-batch gradient descent and
stochastic gradient descent use the same update rule and differ only in how much data each step
sees. Every method names an optimizer of :func:`optimist.optim.optimizer`, its keyword arguments,
a batch rule and a default learning rate.

Batch rules:

``full``
    every step uses the whole training set (on a 2-D test function: the exact gradient);
``one``
    every step uses a single example (on a 2-D function: the exact gradient plus Gaussian noise
    of standard deviation ``sigma``, the function's noise level);
``mini``
    every step uses :data:`MINIBATCH` examples (on a 2-D function: noise ``sigma / sqrt(32)``
    for ``minibatch`` only; the other mini-batch methods (momentum, Adagrad, ...) use the exact
    gradient there, so that their paths show the update rule alone).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch

from optimist.optim import optimizer as build_optimizer

__all__ = [
    "MINIBATCH",
    "METHODS",
    "DEFAULT_METHODS",
    "Method",
    "get_method",
    "parse_method",
    "with_batch_size",
]

MINIBATCH = 32
"""Examples per step for the ``mini`` batch rule."""


@dataclass(frozen=True)
class Method:
    """One row of the method table."""

    name: str
    optimizer: str
    """Name for :func:`optimist.optim.optimizer`."""
    kwargs: dict[str, Any]
    batch: str
    """``"full"``, ``"one"`` or ``"mini"``."""
    default_lr: float
    description: str
    noisy_on_functions: bool = False
    """Whether the 2-D test functions add sampling noise to this method's gradient."""
    in_default_study: bool = True
    mini_batch: int = MINIBATCH
    """Examples per step for the ``mini`` batch rule (``--batch-size`` or ``name[batch=N]``)."""

    def batch_size(self, n_train: int) -> int:
        """Examples per step on a training set of ``n_train`` examples."""
        if self.batch == "full":
            return n_train
        if self.batch == "one":
            return 1
        return min(self.mini_batch, n_train)

    def noise_scale(self, sigma: float) -> float:
        """Gradient-noise standard deviation on a 2-D function whose one-example noise is sigma."""
        if not self.noisy_on_functions:
            return 0.0
        if self.batch == "one":
            return sigma
        return sigma / math.sqrt(self.mini_batch)

    def build(self, params: Iterable[torch.Tensor], lr: float) -> torch.optim.Optimizer:
        """The optimizer over ``params`` with learning rate ``lr``."""
        return build_optimizer(self.optimizer, params, lr=lr, **self.kwargs)

    def as_dict(self) -> dict[str, Any]:
        """The JSON form used in ``results.json``."""
        return {
            "optimizer": self.optimizer,
            "kwargs": dict(self.kwargs),
            "batch": self.batch,
            "batch_size": {"full": "all", "one": 1, "mini": self.mini_batch}[self.batch],
            "default_lr": self.default_lr,
            "noisy_on_functions": self.noisy_on_functions,
            "description": self.description,
        }


_ROWS = (
    Method(
        "gd",
        "gd",
        {},
        "full",
        0.5,
        "Full-batch gradient descent: one exact step per pass over the data.",
    ),
    Method(
        "sgd",
        "sgd",
        {},
        "one",
        0.01,
        "Stochastic gradient descent, one example per step: cheap, noisy steps.",
        noisy_on_functions=True,
    ),
    Method(
        "minibatch",
        "sgd",
        {},
        "mini",
        0.1,
        f"Mini-batch gradient descent, {MINIBATCH} examples per step.",
        noisy_on_functions=True,
    ),
    Method(
        "momentum",
        "momentum",
        {"momentum": 0.9},
        "mini",
        0.01,
        "SGD with heavy-ball momentum 0.9: a running sum of gradients smooths the path.",
    ),
    Method(
        "adagrad",
        "adagrad",
        {},
        "mini",
        0.05,
        "Adagrad: per-parameter steps shrink with the sum of squared gradients.",
    ),
    Method(
        "rmsprop",
        "rmsprop",
        {},
        "mini",
        1e-3,
        "RMSprop: per-parameter steps scaled by a running RMS of gradients.",
    ),
    Method(
        "adadelta",
        "adadelta",
        {},
        "mini",
        1.0,
        "Adadelta: RMSprop with steps in the units of the parameters (lr 1 by design).",
    ),
    Method(
        "adam",
        "adam",
        {},
        "mini",
        1e-3,
        "Adam: momentum plus RMSprop scaling, with bias correction.",
    ),
    Method(
        "nesterov",
        "nesterov",
        {"momentum": 0.9},
        "mini",
        0.01,
        "SGD with Nesterov momentum 0.9: momentum that looks ahead.",
        in_default_study=False,
    ),
    Method(
        "adamw",
        "adamw",
        {},
        "mini",
        1e-3,
        "AdamW: Adam with decoupled weight decay 0.01.",
        in_default_study=False,
    ),
    Method(
        "nadam",
        "nadam",
        {},
        "mini",
        2e-3,
        "NAdam: Adam with Nesterov momentum.",
        in_default_study=False,
    ),
    Method(
        "radam",
        "radam",
        {},
        "mini",
        1e-3,
        "RAdam: Adam with a rectified, warm-up free adaptive step.",
        in_default_study=False,
    ),
    Method(
        "adamax",
        "adamax",
        {},
        "mini",
        2e-3,
        "Adamax: Adam with the infinity norm in place of the second moment.",
        in_default_study=False,
    ),
)

METHODS: dict[str, Method] = {m.name: m for m in _ROWS}
"""Every method, by name."""

DEFAULT_METHODS: tuple[str, ...] = tuple(m.name for m in _ROWS if m.in_default_study)
"""The eight methods every course teaches, in teaching order."""


def _value(text: str) -> Any:
    """A setting's value: a number, true/false, or a tuple written ``a:b`` (``betas=0.9:0.99``)."""
    if ":" in text:
        return tuple(_value(part) for part in text.split(":"))
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        raise KeyError(f"setting value {text!r} is not a number, true/false or a:b") from None


def parse_method(spec: str) -> Method:
    """A method with settings: ``adam[weight_decay=1e-4,batch=64]`` is the ``adam`` row with
    those optimizer keyword arguments and 64 examples per step; ``batch`` takes a number,
    ``1`` or ``full``. The settings become part of the method's name, so results say exactly
    what ran. ``KeyError`` for an unknown method or a malformed setting."""
    spec = spec.strip()
    if "[" not in spec:
        return get_method(spec)
    if not spec.endswith("]"):
        raise KeyError(f"method {spec!r}: settings go in brackets, e.g. adam[weight_decay=1e-4]")
    base, inner = spec[:-1].split("[", 1)
    method = get_method(base)
    kwargs = dict(method.kwargs)
    changes: dict[str, Any] = {}
    for part in filter(None, (p.strip() for p in inner.split(","))):
        key, sep, raw = part.partition("=")
        key = key.strip()
        if not sep or not key:
            raise KeyError(f"method {spec!r}: expected key=value, got {part!r}")
        if key == "batch":
            raw = raw.strip().lower()
            if raw in ("full", "all"):
                changes["batch"] = "full"
            elif raw == "1":
                changes["batch"] = "one"
            else:
                size = _value(raw)
                if not isinstance(size, int) or size < 2:
                    raise KeyError(f"method {spec!r}: batch must be 1, full or a whole number")
                changes.update(batch="mini", mini_batch=size)
        else:
            kwargs[key] = _value(raw.strip())
    try:  # the optimizer checks its own arguments (a clear error names the bad one)
        build_optimizer(method.optimizer, [torch.zeros(1, requires_grad=True)], lr=1e-3, **kwargs)
    except (TypeError, ValueError) as exc:
        raise KeyError(f"method {spec!r}: {exc}") from None
    return dataclasses.replace(method, name=spec, kwargs=kwargs, **changes)


def with_batch_size(method: Method, batch_size: int | None) -> Method:
    """``method`` with ``batch_size`` examples per step if it uses mini-batches (the rules of
    full-batch GD and batch-1 SGD are their batch size, so they keep it)."""
    if batch_size is None or method.batch != "mini" or "batch=" in method.name:
        return method
    return dataclasses.replace(method, mini_batch=int(batch_size))


def get_method(name: str) -> Method:
    """The method called ``name`` (or written ``name[settings]``, see :func:`parse_method`);
    ``KeyError`` lists the known ones."""
    if "[" in name:
        return parse_method(name)
    try:
        return METHODS[name]
    except KeyError:
        raise KeyError(f"unknown method {name!r}; known: {', '.join(METHODS)}") from None
