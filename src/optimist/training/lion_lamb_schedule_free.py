"""Keras 3's Lion, Lamb and ScheduleFreeAdamW, run by optimist's exact optimizers.

As the other Keras classes (:mod:`optimist.training.optimizers`), each builds its
``optimist.optim`` optimizer on the model's parameters; Keras' weight decay
(``p -= lr * weight_decay * p`` before the update, outside the rule) is the base class's, so
every torch optimizer here runs with ``weight_decay=0``:

=================  ================================================================================
Keras              how the torch-style optimizer is driven
=================  ================================================================================
Lion               ``optim.Lion(lr, betas=(beta_1, beta_2))``: the same rule, ``p -= lr *
                   sign(beta_1*m + (1-beta_1)*g)`` then ``m = beta_2*m + (1-beta_2)*g``, with the
                   same coefficients as Keras' torch backend (Python floats, ``torch_lion.py``),
                   so the signs agree bit for bit, near-ties included (Keras' other backends cast
                   the betas to float32 first: a sign may then differ only where ``c`` is within
                   rounding of 0). The betas are set after torch's constructor, which wants them
                   in [0, 1): Keras allows 1 (``beta_1 = 1``: the sign of the momentum alone).
Lamb               ``optim.LAMB(lr, betas, eps=epsilon)``: the same rule (Optax's conventions are
                   Keras': both moments bias-corrected, epsilon added to ``sqrt(v_hat)``, trust
                   ratio ``||p|| / ||update||``, 1 where a norm is 0); only the default epsilon
                   differs (Keras 1e-7). Keras has no string name for it (``keras.optimizers.get(
                   "lamb")`` fails in Keras 3.15), so ``compile(optimizer="lamb")`` keeps the
                   registry's ``optim.LAMB``; ``Lamb`` still (de)serializes by class name.
ScheduleFreeAdamW  ``optim.ScheduleFreeAdamW(lr, betas, eps, warmup_steps, r=0,
                   weight_lr_power=0)``: uniform average weights ``1/t`` (``r = p = 0``), warmup
                   ``min(t / warmup_steps, 1)``, only ``v`` bias-corrected, epsilon outside the
                   root: the rule of Keras' ``update_step``, with ``x`` eliminated (``y`` updated
                   from ``y`` and ``z``, equal to Keras' recovery of ``x`` from them). Keras
                   starts ``z`` at the weights before any decay, torch at the first step (after
                   the base class' decay): with weight decay the state is made before the first
                   decay. Keras has no train/eval modes: the model holds ``y`` throughout, and
                   ``fit``'s validation and ``evaluate`` run at ``y`` (``fit`` switches no modes
                   for Keras-style optimizers). These are Keras' numbers on its JAX backend
                   (the tests' oracle here). On its torch backend Keras 3.15 differs: its
                   ``momentum_old = momentum.value`` is the tensor that ``assign_sub`` then
                   updates in place, so ``x`` is recovered from the new ``z``, and ``y`` becomes
                   the plain average of the ``z``, whatever ``beta_1``: the numbers of this class
                   with ``beta_1=1`` (set after torch's constructor, as Lion's betas), which the
                   tests check against Keras on torch.
=================  ================================================================================
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Iterable
from typing import Any

import torch

from optimist import optim
from optimist.training.optimizer_base import Optimizer, _number

__all__ = ["Lamb", "Lion", "ScheduleFreeAdamW"]


def _below_one(name: str, value: Any) -> float:
    """A beta in [0, 1) where the rule's bias correction divides by ``1 - beta**t`` (Keras
    accepts 1 and then trains on NaN)."""
    beta = _number(name, value, high=1.0)
    if beta == 1:
        raise ValueError(
            f"`{name}` must be < 1 (the bias correction divides by 1 - {name}**t). "
            f"Received: {name}={value}"
        )
    return beta


class Lion(Optimizer):
    """Keras' Lion: ``learning_rate=0.001, beta_1=0.9, beta_2=0.99``."""

    keras_name = "lion"
    torch_class = optim.Lion
    rule_decay = {}  # Lion's decoupled decay is Keras'

    def __init__(
        self,
        learning_rate: float | Callable[[int], float] = 0.001,
        beta_1: float = 0.9,
        beta_2: float = 0.99,
        **kwargs: Any,
    ) -> None:
        super().__init__(learning_rate, **kwargs)
        self.beta_1 = _number("beta_1", beta_1, low=-math.inf)
        if self.beta_1 <= 0 or self.beta_1 > 1:
            raise ValueError(
                "Argument `beta_1` must be in the [0, 1] range. Otherwise, the optimizer "
                f"degenerates to SignSGD. Received: beta_1={beta_1}."
            )
        self.beta_2 = _number("beta_2", beta_2, high=1.0)

    def _rule_config(self) -> dict[str, Any]:
        return {"beta_1": self.beta_1, "beta_2": self.beta_2}

    def _unchecked_group_values(self) -> dict[str, Any]:
        return {"betas": (self.beta_1, self.beta_2)}  # torch's check wants [0, 1); Keras' 1 is ok


class Lamb(Optimizer):
    """Keras' Lamb: ``learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7``."""

    keras_name = "lamb"
    torch_class = optim.LAMB

    def __init__(
        self,
        learning_rate: float | Callable[[int], float] = 0.001,
        beta_1: float = 0.9,
        beta_2: float = 0.999,
        epsilon: float = 1e-7,
        **kwargs: Any,
    ) -> None:
        super().__init__(learning_rate, **kwargs)
        self.beta_1 = _below_one("beta_1", beta_1)
        self.beta_2 = _below_one("beta_2", beta_2)
        self.epsilon = _number("epsilon", epsilon)

    def _rule_config(self) -> dict[str, Any]:
        return {"beta_1": self.beta_1, "beta_2": self.beta_2, "epsilon": self.epsilon}

    def _torch_kwargs(self) -> dict[str, Any]:
        return {"betas": (self.beta_1, self.beta_2), "eps": self.epsilon}


class ScheduleFreeAdamW(Optimizer):
    """Keras' ScheduleFreeAdamW: ``learning_rate=0.0025, beta_1=0.9, beta_2=0.999,
    epsilon=1e-8, warmup_steps=0``; the model holds Keras' ``y`` (no train/eval modes)."""

    keras_name = "schedulefreeadamw"
    torch_class = optim.ScheduleFreeAdamW

    def __init__(
        self,
        learning_rate: float | Callable[[int], float] = 0.0025,
        beta_1: float = 0.9,
        beta_2: float = 0.999,
        epsilon: float = 1e-8,
        warmup_steps: int = 0,
        name: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(learning_rate, name=name or "schedule_free_adam_w", **kwargs)
        self.beta_1 = _number("beta_1", beta_1, high=1.0)
        if not self.beta_1 > 0:  # Keras divides by it (x = (y - (1 - beta_1) z) / beta_1)
            raise ValueError(f"`beta_1` must be > 0. Received: beta_1={beta_1}")
        self.beta_2 = _below_one("beta_2", beta_2)
        self.epsilon = _number("epsilon", epsilon)
        if (
            isinstance(warmup_steps, bool)
            or not isinstance(warmup_steps, numbers.Integral)
            or warmup_steps < 0
        ):
            raise ValueError(
                f"`warmup_steps` must be an integer >= 0. Received: warmup_steps={warmup_steps!r}"
            )
        self.warmup_steps = int(warmup_steps)
        self._unstarted = False

    def _rule_config(self) -> dict[str, Any]:
        return {
            "beta_1": self.beta_1,
            "beta_2": self.beta_2,
            "epsilon": self.epsilon,
            "warmup_steps": self.warmup_steps,
        }

    def _torch_kwargs(self) -> dict[str, Any]:
        return {
            "eps": self.epsilon,
            "warmup_steps": self.warmup_steps,
            "r": 0.0,
            "weight_lr_power": 0.0,
        }

    def _unchecked_group_values(self) -> dict[str, Any]:
        return {"betas": (self.beta_1, self.beta_2)}  # Keras allows beta_1 = 1

    def build(
        self, params: Iterable[torch.Tensor], names: Iterable[str] | None = None
    ) -> torch.optim.Optimizer:
        opt = super().build(params, names)
        self._unstarted = True
        return opt

    def _before_step(self, opt: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        if self.weight_decay and self._unstarted:
            # Keras' z starts at the weights before the first decay; torch's would copy the
            # decayed ones. torch's state layout (z, exp_avg_sq), made here from the weights.
            for p in self._params:
                state = opt.state[p]
                if p.grad is not None and not state:
                    state["z"] = p.detach().clone(memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        self._unstarted = False
        super()._before_step(opt, args, kwargs)
