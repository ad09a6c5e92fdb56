"""Keras 3 optimizers run by optimist's exact optimizers: ``optimist.optimizers.Adam(...)``.

These classes take Keras 3's argument names and defaults (``learning_rate``, ``beta_1``,
``epsilon=1e-7``, ``rho``, ``initial_accumulator_value``, ``weight_decay``, ``clipnorm``,
``global_clipnorm``, ``clipvalue``, ``use_ema``, a schedule as ``learning_rate``...) and follow
Keras 3's update rules. They need no parameters when made: ``model.compile`` keeps the object
and :meth:`Optimizer.build` creates, when the model's parameters exist, the matching
``optimist.optim`` optimizer (torch conventions) with hyperparameters and a per-step hook that
turn its update into Keras' numbers:

=============  ====================================================================================
Keras          how the torch-style optimizer is driven
=============  ====================================================================================
SGD            ``optim.SGD(lr, momentum, nesterov)``: Keras keeps ``lr`` inside its momentum
               (``m = momentum*m - lr*g``), torch outside (``b = momentum*b + g; p -= lr*b``);
               equal while lr is constant, and when lr changes (schedule, callback) the buffer
               is rescaled by ``lr_old / lr_new`` so the two stay equal.
Adam, AdamW    ``optim.Adam(lr, betas, amsgrad)``: Keras adds epsilon to ``sqrt(v)`` *before*
               bias correction (``sqrt(v) + eps``), torch after (``sqrt(v / (1 - beta_2^t)) +
               eps``); so torch's ``eps`` is set each step to ``epsilon / sqrt(1 - beta_2^t)``.
RMSprop        ``optim.RMSprop(lr, alpha=rho, eps=0, momentum, centered)``: Keras divides by
               ``sqrt(v + eps)``, torch by ``sqrt(v) + eps``; torch's ``square_avg`` holds
               ``v + epsilon`` (started at ``epsilon / rho`` and shifted by
               ``epsilon * (1 - rho) / rho`` before each step), so ``sqrt(square_avg)`` is
               Keras' denominator. Momentum buffers as for SGD.
Adagrad        ``optim.Adagrad(lr, eps=0, initial_accumulator_value=initial + epsilon)``: Keras
               divides by ``sqrt(acc + eps)``, torch by ``sqrt(acc) + eps``.
Adadelta       ``optim.Adadelta(lr, rho, eps)``: the same rule (epsilon inside both roots).
Adamax         ``optim.Adamax(lr, betas, eps)``: torch takes ``max(beta_2*u, |g| + eps)``, Keras
               ``max(beta_2*u, |g|)`` and adds eps after; ``exp_inf`` is shifted by
               ``epsilon * (1 - beta_2) / beta_2`` before each step so it holds Keras' ``u + eps``.
Nadam          ``optim.NAdam(lr, betas, eps, momentum_decay=1)``: Keras' momentum schedule
               ``beta_1 * (1 - 0.5 * 0.96 ** t)`` is torch's with ``momentum_decay=1``.
=============  ====================================================================================

Keras 3's other optimizers are in modules of their own, each with its table of how it is driven:
:mod:`~optimist.training.keras_adafactor`, :mod:`~optimist.training.keras_ftrl`,
:mod:`~optimist.training.keras_muon`, :mod:`~optimist.training.lion_lamb_schedule_free` (Lion,
Lamb, ScheduleFreeAdamW) and :mod:`~optimist.training.keras_wrappers` (LossScaleOptimizer,
MultiOptimizer, OptimizerMap); this module names them all (:func:`get`, :func:`deserialize`).

What all share (gradient clipping, decoupled weight decay, the moving average of the weights,
the learning rate as a float or a schedule, loss scaling, gradient accumulation) is the base
class's: :mod:`optimist.training.optimizer_base`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from optimist import optim
from optimist.training.keras_adafactor import Adafactor
from optimist.training.keras_ftrl import Ftrl
from optimist.training.keras_muon import Muon
from optimist.training.keras_wrappers import LossScaleOptimizer, MultiOptimizer, OptimizerMap
from optimist.training.lion_lamb_schedule_free import Lamb, Lion, ScheduleFreeAdamW
from optimist.training.optimizer_base import Optimizer, _number, keras_adam_eps

__all__ = [
    "SGD",
    "Adadelta",
    "Adafactor",
    "Adagrad",
    "Adam",
    "AdamW",
    "Adamax",
    "Muon",
    "Lamb",
    "Lion",
    "LossScaleOptimizer",
    "MultiOptimizer",
    "Ftrl",
    "Nadam",
    "Optimizer",
    "OptimizerMap",
    "RMSprop",
    "ScheduleFreeAdamW",
    "deserialize",
    "get",
    "serialize",
]


class SGD(Optimizer):
    """Keras' SGD: ``learning_rate=0.01``, ``momentum=0.0``, ``nesterov=False``."""

    keras_name = "sgd"
    torch_class = optim.SGD

    def __init__(
        self,
        learning_rate: float | Callable[[int], float] = 0.01,
        momentum: float = 0.0,
        nesterov: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(learning_rate, **kwargs)
        self.momentum = _number("momentum", momentum, high=1.0)
        self.nesterov = bool(nesterov)

    def _rule_config(self) -> dict[str, Any]:
        return {"momentum": self.momentum, "nesterov": self.nesterov}

    def _torch_kwargs(self) -> dict[str, Any]:
        return {"momentum": self.momentum, "nesterov": self.nesterov}

    def _momentum_key(self) -> str | None:
        return "momentum_buffer" if self.momentum else None


class _AdamBase(Optimizer):
    def __init__(
        self,
        learning_rate: float | Callable[[int], float],
        beta_1: float,
        beta_2: float,
        epsilon: float,
        **kwargs: Any,
    ) -> None:
        super().__init__(learning_rate, **kwargs)
        self.beta_1 = _number("beta_1", beta_1, high=1.0)
        self.beta_2 = _number("beta_2", beta_2, high=1.0)
        self.epsilon = _number("epsilon", epsilon)

    def _rule_config(self) -> dict[str, Any]:
        return {"beta_1": self.beta_1, "beta_2": self.beta_2, "epsilon": self.epsilon}


class Adam(_AdamBase):
    """Keras' Adam: ``learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7,
    amsgrad=False``."""

    keras_name = "adam"
    torch_class = optim.Adam
    rule_decay = {"decoupled_weight_decay": True}  # AdamW's decay is Keras'

    def __init__(
        self,
        learning_rate: float | Callable[[int], float] = 0.001,
        beta_1: float = 0.9,
        beta_2: float = 0.999,
        epsilon: float = 1e-7,
        amsgrad: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(learning_rate, beta_1, beta_2, epsilon, **kwargs)
        self.amsgrad = bool(amsgrad)

    def _rule_config(self) -> dict[str, Any]:
        return {**super()._rule_config(), "amsgrad": self.amsgrad}

    def _torch_kwargs(self) -> dict[str, Any]:
        return {
            "betas": (self.beta_1, self.beta_2),
            "eps": self.epsilon,
            "amsgrad": self.amsgrad,
        }

    def _adjust(self, opt: torch.optim.Optimizer, step: int) -> None:
        eps = keras_adam_eps(self.epsilon, self.beta_2, step)
        for group in opt.param_groups:
            group["eps"] = eps


class AdamW(Adam):
    """Keras' AdamW: Adam with ``weight_decay=0.004`` (decoupled, ``p -= lr * wd * p``)."""

    keras_name = "adamw"

    def __init__(
        self,
        learning_rate: float | Callable[[int], float] = 0.001,
        weight_decay: float = 0.004,
        beta_1: float = 0.9,
        beta_2: float = 0.999,
        epsilon: float = 1e-7,
        amsgrad: bool = False,
        **kwargs: Any,
    ) -> None:
        if weight_decay is None:
            raise ValueError("Argument `weight_decay` must be a float. Received: weight_decay=None")
        super().__init__(
            learning_rate, beta_1, beta_2, epsilon, amsgrad, weight_decay=weight_decay, **kwargs
        )


class Adamax(_AdamBase):
    """Keras' Adamax: ``learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7``."""

    keras_name = "adamax"
    torch_class = optim.Adamax

    def __init__(
        self,
        learning_rate: float | Callable[[int], float] = 0.001,
        beta_1: float = 0.9,
        beta_2: float = 0.999,
        epsilon: float = 1e-7,
        **kwargs: Any,
    ) -> None:
        super().__init__(learning_rate, beta_1, beta_2, epsilon, **kwargs)
        if not self.beta_2 > 0:
            raise ValueError("`beta_2` must be > 0 for Adamax. Received: beta_2=0")

    def _torch_kwargs(self) -> dict[str, Any]:
        return {"betas": (self.beta_1, self.beta_2), "eps": self.epsilon}

    def _adjust(self, opt: torch.optim.Optimizer, step: int) -> None:
        # exp_inf holds Keras' u + eps: shift so that beta_2 * exp_inf == beta_2 * u + eps.
        # (Before the first step exp_inf is 0 and max(0, |g| + eps) is already u_1 + eps.)
        inf = [opt.state[p]["exp_inf"] for p in self._params if "exp_inf" in opt.state.get(p, {})]
        if inf:
            torch._foreach_add_(inf, self.epsilon * (1.0 - self.beta_2) / self.beta_2)


class Nadam(_AdamBase):
    """Keras' Nadam: ``learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7``, momentum
    schedule ``beta_1 * (1 - 0.5 * 0.96 ** t)``."""

    keras_name = "nadam"
    torch_class = optim.NAdam
    rule_decay = {"decoupled_weight_decay": True}  # NAdamW's decay is Keras'

    def __init__(
        self,
        learning_rate: float | Callable[[int], float] = 0.001,
        beta_1: float = 0.9,
        beta_2: float = 0.999,
        epsilon: float = 1e-7,
        **kwargs: Any,
    ) -> None:
        super().__init__(learning_rate, beta_1, beta_2, epsilon, **kwargs)

    def _torch_kwargs(self) -> dict[str, Any]:
        return {"betas": (self.beta_1, self.beta_2), "eps": self.epsilon, "momentum_decay": 1.0}


class RMSprop(Optimizer):
    """Keras' RMSprop: ``learning_rate=0.001, rho=0.9, momentum=0.0, epsilon=1e-7,
    centered=False``."""

    keras_name = "rmsprop"
    torch_class = optim.RMSprop

    def __init__(
        self,
        learning_rate: float | Callable[[int], float] = 0.001,
        rho: float = 0.9,
        momentum: float = 0.0,
        epsilon: float = 1e-7,
        centered: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(learning_rate, **kwargs)
        self.rho = _number("rho", rho, high=1.0)
        if not self.rho > 0:
            raise ValueError("`rho` must be > 0 for RMSprop. Received: rho=0")
        self.momentum = _number("momentum", momentum, high=1.0)
        self.epsilon = _number("epsilon", epsilon)
        self.centered = bool(centered)

    def _rule_config(self) -> dict[str, Any]:
        return {
            "rho": self.rho,
            "momentum": self.momentum,
            "epsilon": self.epsilon,
            "centered": self.centered,
        }

    def _torch_kwargs(self) -> dict[str, Any]:
        return {
            "alpha": self.rho,
            "eps": 0.0,
            "momentum": self.momentum,
            "centered": self.centered,
        }

    def _momentum_key(self) -> str | None:
        return "momentum_buffer" if self.momentum else None

    def _adjust(self, opt: torch.optim.Optimizer, step: int) -> None:
        # square_avg holds Keras' v + eps after each step; before a step it must hold
        # v + eps / rho, so that rho * square_avg + (1 - rho) * g^2 == v_new + eps.
        shift, start = [], self.epsilon / self.rho
        keep = torch.preserve_format
        for p in self._params:
            if p.grad is None:
                continue
            state = opt.state[p]
            if not state:  # torch's state layout, created here so it can start at eps / rho
                wide = torch.get_default_dtype() == torch.float64
                state["step"] = torch.tensor(0.0, dtype=torch.float64 if wide else torch.float32)
                state["square_avg"] = torch.full_like(p, start, memory_format=keep)
                if self.momentum > 0:
                    state["momentum_buffer"] = torch.zeros_like(p, memory_format=keep)
                if self.centered:
                    state["grad_avg"] = torch.zeros_like(p, memory_format=keep)
            else:
                shift.append(state["square_avg"])
        if shift:
            torch._foreach_add_(shift, start - self.epsilon)


class Adagrad(Optimizer):
    """Keras' Adagrad: ``learning_rate=0.001, initial_accumulator_value=0.1, epsilon=1e-7``."""

    keras_name = "adagrad"
    torch_class = optim.Adagrad

    def __init__(
        self,
        learning_rate: float | Callable[[int], float] = 0.001,
        initial_accumulator_value: float = 0.1,
        epsilon: float = 1e-7,
        **kwargs: Any,
    ) -> None:
        super().__init__(learning_rate, **kwargs)
        self.initial_accumulator_value = _number(
            "initial_accumulator_value", initial_accumulator_value
        )
        self.epsilon = _number("epsilon", epsilon)

    def _rule_config(self) -> dict[str, Any]:
        return {
            "initial_accumulator_value": self.initial_accumulator_value,
            "epsilon": self.epsilon,
        }

    def _torch_kwargs(self) -> dict[str, Any]:
        # sqrt(acc + eps) == sqrt(acc') with acc' started at initial + eps, torch's eps = 0
        return {
            "eps": 0.0,
            "initial_accumulator_value": self.initial_accumulator_value + self.epsilon,
        }


class Adadelta(Optimizer):
    """Keras' Adadelta: ``learning_rate=0.001, rho=0.95, epsilon=1e-7``."""

    keras_name = "adadelta"
    torch_class = optim.Adadelta

    def __init__(
        self,
        learning_rate: float | Callable[[int], float] = 0.001,
        rho: float = 0.95,
        epsilon: float = 1e-7,
        **kwargs: Any,
    ) -> None:
        super().__init__(learning_rate, **kwargs)
        self.rho = _number("rho", rho, high=1.0)
        self.epsilon = _number("epsilon", epsilon)

    def _rule_config(self) -> dict[str, Any]:
        return {"rho": self.rho, "epsilon": self.epsilon}

    def _torch_kwargs(self) -> dict[str, Any]:
        return {"rho": self.rho, "eps": self.epsilon}


_CLASSES: dict[str, type[Optimizer]] = {
    cls.keras_name: cls
    for cls in (
        SGD,
        RMSprop,
        Adam,
        AdamW,
        Adagrad,
        Adadelta,
        Adamax,
        Nadam,
        Muon,
        Adafactor,
        Lion,
        ScheduleFreeAdamW,
        LossScaleOptimizer,
        MultiOptimizer,
        Ftrl,
    )
}

#: Keras classes without a string name in Keras (``keras.optimizers.get("lamb")`` fails): they
#: (de)serialize by class name, and ``compile("lamb")`` keeps the registry's optimizer
_UNNAMED: tuple[type[Optimizer], ...] = (Lamb,)


def get(identifier: str | Optimizer | dict[str, Any]) -> Optimizer:
    """A Keras optimizer from a name (``"rmsprop"``, Keras 3's defaults), a config, or itself."""
    if isinstance(identifier, Optimizer):
        return identifier
    if isinstance(identifier, dict):
        return deserialize(identifier)
    if isinstance(identifier, str) and identifier.lower() in _CLASSES:
        return _CLASSES[identifier.lower()]()
    raise ValueError(
        f"Could not interpret optimizer identifier: {identifier!r}. Keras names: "
        f"{', '.join(sorted(_CLASSES))}"
    )


def is_keras_name(name: str) -> bool:
    return name.lower() in _CLASSES


def serialize(optimizer: Optimizer) -> dict[str, Any]:
    return {"class_name": type(optimizer).__name__, "config": optimizer.get_config()}


def deserialize(config: dict[str, Any]) -> Optimizer:
    by_class = {cls.__name__: cls for cls in (*_CLASSES.values(), *_UNNAMED)}
    cls = by_class.get(config.get("class_name", ""))
    if cls is None:
        raise ValueError(f"unknown optimizer class {config.get('class_name')!r}")
    return cls.from_config(config.get("config", {}))
