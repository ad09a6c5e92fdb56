"""Keras 3's ``Ftrl`` on optimist's engine: ``optimist.optimizers.Ftrl(learning_rate=1e-3)``.

=============  ====================================================================================
Keras          how the torch-style optimizer is driven
=============  ====================================================================================
Ftrl           ``optim.Ftrl(lr, lr_power, initial_accumulator_value, l1, l2, l2_shrinkage,
               beta)``: the same rule (Keras' ``accumulator`` and ``linear`` are its state, under
               the same keys; Keras' ``beta / (2 * lr)`` added to ``l2`` is computed each step
               from the step's rate), so no per-step adjustment; Keras' shared arguments
               (clipping, decoupled ``weight_decay``, EMA, schedules) are the base class's.
=============  ====================================================================================

Where it differs from Keras: a learning rate of 0 (at build, or reached by a schedule) and a
negative ``beta`` raise ``ValueError`` (Keras accepts them; the first makes its weights NaN, as
the rule divides by the rate, the second a negative denominator).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from optimist import optim
from optimist.training.optimizer_base import Optimizer, _number

__all__ = ["Ftrl"]


class Ftrl(Optimizer):
    """Keras' Ftrl (FTRL-Proximal, McMahan et al. 2013): ``learning_rate=0.001,
    learning_rate_power=-0.5, initial_accumulator_value=0.1, l1_regularization_strength=0.0,
    l2_regularization_strength=0.0, l2_shrinkage_regularization_strength=0.0, beta=0.0``."""

    keras_name = "ftrl"
    torch_class = optim.Ftrl
    rule_decay = {}  # its decoupled decay, before the rule, is Keras'

    def __init__(
        self,
        learning_rate: float | Callable[[int], float] = 0.001,
        learning_rate_power: float = -0.5,
        initial_accumulator_value: float = 0.1,
        l1_regularization_strength: float = 0.0,
        l2_regularization_strength: float = 0.0,
        l2_shrinkage_regularization_strength: float = 0.0,
        beta: float = 0.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(learning_rate, **kwargs)
        self.learning_rate_power = _number(
            "learning_rate_power", learning_rate_power, low=-math.inf, high=0.0
        )
        self.initial_accumulator_value = _number(
            "initial_accumulator_value", initial_accumulator_value
        )
        self.l1_regularization_strength = _number(
            "l1_regularization_strength", l1_regularization_strength
        )
        self.l2_regularization_strength = _number(
            "l2_regularization_strength", l2_regularization_strength
        )
        self.l2_shrinkage_regularization_strength = _number(
            "l2_shrinkage_regularization_strength", l2_shrinkage_regularization_strength
        )
        self.beta = _number("beta", beta)

    def _rule_config(self) -> dict[str, Any]:
        return {
            "learning_rate_power": self.learning_rate_power,
            "initial_accumulator_value": self.initial_accumulator_value,
            "l1_regularization_strength": self.l1_regularization_strength,
            "l2_regularization_strength": self.l2_regularization_strength,
            "l2_shrinkage_regularization_strength": self.l2_shrinkage_regularization_strength,
            "beta": self.beta,
        }

    def _torch_kwargs(self) -> dict[str, Any]:
        return {
            "lr_power": self.learning_rate_power,
            "initial_accumulator_value": self.initial_accumulator_value,
            "l1": self.l1_regularization_strength,
            "l2": self.l2_regularization_strength,
            "l2_shrinkage": self.l2_shrinkage_regularization_strength,
            "beta": self.beta,
        }
