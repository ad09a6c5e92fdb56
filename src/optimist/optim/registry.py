"""Optimizers by name, as Keras users type them: ``optimist.optimizer("adam", params, lr=1e-3)``.

Each name maps to an optimizer class and the defaults the name implies (``"momentum"`` is SGD with
``momentum=0.9``). Keyword arguments given by the caller override those defaults. Names are
case-insensitive. New optimizers join with :func:`register`.

Defaults are torch.optim's, except that the gradient-descent names (``sgd``, ``gd``, ``momentum``,
``nesterov``) use ``lr=0.01`` as Keras does (torch.optim.SGD's default is 1e-3).
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from optimist.optim.adadelta import Adadelta
from optimist.optim.adafactor import Adafactor
from optimist.optim.adagrad import Adagrad
from optimist.optim.adam import Adam, AdamW
from optimist.optim.adamax import Adamax
from optimist.optim.adan import Adan
from optimist.optim.ademamix import AdEMAMix
from optimist.optim.adopt import ADOPT
from optimist.optim.base import ParamsT
from optimist.optim.ftrl import Ftrl
from optimist.optim.lamb import LAMB
from optimist.optim.lars import LARS
from optimist.optim.lion import Lion
from optimist.optim.lookahead import Lookahead
from optimist.optim.muon import Muon
from optimist.optim.nadam import NAdam
from optimist.optim.prodigy import Prodigy
from optimist.optim.radam import RAdam
from optimist.optim.rmsprop import RMSprop
from optimist.optim.schedule_free import ScheduleFreeAdamW, ScheduleFreeSGD
from optimist.optim.sgd import SGD
from optimist.optim.soap import SOAP
from optimist.optim.sophia import SophiaG

__all__ = ["OptimizerSpec", "optimizer", "optimizers", "register", "spec"]


@dataclass(frozen=True)
class OptimizerSpec:
    """A registered name: the factory (usually a class), its defaults, and a one-line summary."""

    name: str
    factory: Callable[..., torch.optim.Optimizer]
    summary: str
    defaults: dict[str, Any] = field(default_factory=dict)


_REGISTRY: dict[str, OptimizerSpec] = {}


def register(
    name: str,
    factory: Callable[..., torch.optim.Optimizer],
    summary: str,
    *,
    defaults: dict[str, Any] | None = None,
    overwrite: bool = False,
) -> None:
    """Add ``name`` to the registry (lowercase). Raises ``ValueError`` if it is taken."""
    key = name.lower()
    if key in _REGISTRY and not overwrite:
        raise ValueError(f"optimizer name {name!r} is already registered")
    _REGISTRY[key] = OptimizerSpec(key, factory, summary, dict(defaults or {}))


def spec(name: str) -> OptimizerSpec:
    """The registry entry for ``name``; unknown names raise ``ValueError`` with close matches."""
    if not isinstance(name, str):
        raise ValueError(f"optimizer name must be a string, got {type(name).__name__}")
    key = name.lower()
    if key not in _REGISTRY:
        close = difflib.get_close_matches(key, list(_REGISTRY), n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise ValueError(
            f"Unknown optimizer {name!r}.{hint} Known optimizers: {', '.join(sorted(_REGISTRY))}"
        )
    return _REGISTRY[key]


def optimizer(name: str, params: ParamsT, **kwargs: Any) -> torch.optim.Optimizer:
    """Build the optimizer called ``name`` over ``params``; ``kwargs`` override its defaults.

    Example:
        >>> model = torch.nn.Linear(3, 1)
        >>> opt = optimizer("momentum", model.parameters(), lr=0.1)
        >>> type(opt).__name__, opt.defaults["momentum"]
        ('SGD', 0.9)
    """
    entry = spec(name)
    return entry.factory(params, **{**entry.defaults, **kwargs})


def optimizers() -> dict[str, str]:
    """Every registered name with its one-line summary, in alphabetical order."""
    return {name: _REGISTRY[name].summary for name in sorted(_REGISTRY)}


_KERAS_SGD_LR = 0.01
register(
    "sgd",
    SGD,
    "Stochastic gradient descent: theta -= lr * g (lr 0.01).",
    defaults={"lr": _KERAS_SGD_LR},
)
register(
    "gd",
    SGD,
    "Gradient descent (the SGD rule; feed it the whole data set per step).",
    defaults={"lr": _KERAS_SGD_LR},
)
register(
    "momentum",
    SGD,
    "SGD with heavy-ball momentum 0.9 (Polyak).",
    defaults={"lr": _KERAS_SGD_LR, "momentum": 0.9},
)
register(
    "nesterov",
    SGD,
    "SGD with Nesterov momentum 0.9.",
    defaults={"lr": _KERAS_SGD_LR, "momentum": 0.9, "nesterov": True},
)
register("adagrad", Adagrad, "Adagrad: per-coordinate steps from the sum of squared gradients.")
register("rmsprop", RMSprop, "RMSprop: steps scaled by a running RMS of gradients.")
register("adadelta", Adadelta, "Adadelta: RMSprop with unit-correcting running RMS of updates.")
register("adam", Adam, "Adam: momentum plus RMSprop-style scaling, with bias correction.")
register("adamw", AdamW, "AdamW: Adam with decoupled weight decay (default 0.01).")
register("adamax", Adamax, "Adamax: Adam with the infinity norm instead of the second moment.")
register("nadam", NAdam, "NAdam: Adam with Nesterov momentum.")
register("radam", RAdam, "RAdam: Adam with a rectified (warm-up free) adaptive step.")
register("lion", Lion, "Lion: the sign of interpolated momentum, decoupled weight decay (2023).")
register("adopt", ADOPT, "ADOPT: Adam normalising by the previous second moment, clipped (2024).")
register("ademamix", AdEMAMix, "AdEMAMix: Adam with a fast and a slow momentum mixed (2024).")
register("adan", Adan, "Adan: adaptive Nesterov momentum from gradient differences (2022).")
register(
    "ftrl",
    Ftrl,
    "FTRL-Proximal: weights from per-coordinate sums, L1/L2 regularized (2013; Keras' Ftrl).",
)
register(
    "schedule_free_adamw",
    ScheduleFreeAdamW,
    "Schedule-Free AdamW: no LR schedule, evaluate the average (train()/eval(), 2024).",
)
register(
    "schedule_free_sgd",
    ScheduleFreeSGD,
    "Schedule-Free SGD: no LR schedule, evaluate the average (train()/eval(), 2024).",
)
register(
    "muon",
    Muon,
    "Muon: Newton-Schulz orthogonalised momentum for matrices, AdamW for the rest (2024).",
)
register("adafactor", Adafactor, "Adafactor: factored second moments, relative steps (2018).")
register("lamb", LAMB, "LAMB: Adam with a per-tensor trust ratio ||w|| / ||u|| (2019).")
register("lars", LARS, "LARS: momentum SGD with a per-tensor trust ratio (2017).")
register("soap", SOAP, "SOAP: Adam in the eigenbasis of Shampoo's preconditioner (2024).")
register("prodigy", Prodigy, "Prodigy: Adam with a learning-rate-free step size estimate d (2023).")
register(
    "sophia",
    SophiaG,
    "SophiaG: clipped sign momentum over a Gauss-Newton curvature EMA (update_hessian(), 2023).",
)
register("sophiag", SophiaG, "SophiaG (the same as 'sophia').")


def lookahead(
    params: ParamsT,
    inner: str = "adam",
    k: int = 5,
    alpha: float = 0.5,
    reset_state: bool = False,
    **kwargs: Any,
) -> Lookahead:
    """``Lookahead`` over the optimizer registered as ``inner`` (``kwargs`` go to it)."""
    return Lookahead(optimizer(inner, params, **kwargs), k=k, alpha=alpha, reset_state=reset_state)


register(
    "lookahead",
    lookahead,
    "Lookahead: k steps of an inner optimizer (inner='adam'), then one step back (2019).",
)
