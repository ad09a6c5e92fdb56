"""Keras 3's ``Adafactor`` on ``optimist.optim.Adafactor``: ``optimist.optimizers.Adafactor()``.

Keras follows the paper (Shazeer & Stern 2018, Algorithms 4-5 with update clipping); torch's
rule, which ``optim.Adafactor`` computes by default, differs from it in one place, and the
rest is the same rule under other names:

==================  ===========================================================================
Keras               on ``optim.Adafactor``
==================  ===========================================================================
``epsilon_1``       added to ``g^2`` before the row and column means (and for vectors), no
                    floor: ``eps1_form="add"``, ``eps=(epsilon_1, epsilon_2)``. torch's
                    default floors the estimate at ``eps1^2`` instead, 0 in float32 at 1e-30,
                    so a zero gradient entry would give 0/0 where Keras gives 0.
``epsilon_2``       the floor of the parameter RMS in ``alpha_t = max(eps2, RMS(p)) * rho_t``:
                    torch's ``eps[1]``, the same.
``learning_rate``   ``rho_t = min(lr, 1 / sqrt(t))``: torch's ``lr``, the same (a schedule's
                    value each step, by the base class); ``t`` counts updates, as Keras'
                    ``iterations + 1``.
``relative_step``   kept and saved, changes nothing: Keras 3 takes ``min(lr, 1 / sqrt(t))``
                    again for ``rho_t`` whatever it is (and with a schedule too).
``beta_2_decay``    ``beta_2_t = 1 - t^beta_2_decay``: torch's ``beta2_decay``.
``clip_threshold``  ``u / max(1, RMS(u) / clip_threshold)``: torch's ``d``; torch refuses
                    ``d < 1`` when the optimizer is made, Keras does not, so the built
                    optimizer's groups get ``d = clip_threshold`` after that check.
rank >= 2           factored over the last two dimensions, ``v = (r / mean(r)) outer c`` with
                    ``r``, ``c`` the mean-square statistics: torch's ``row_var``/``col_var``.
rank 0 and 1        a full second moment: torch's ``variance``.
``weight_decay``    decoupled, ``p -= lr * weight_decay * p`` before the update (so ``RMS(p)``
                    is the decayed one's, as Keras): the base class; torch's stays 0.
==================  ===========================================================================

The numbers differ from Keras' in one case: where a factored tensor's gradient has an all-zero
row and an all-zero column, Keras' ``v`` is ``eps1^2 / mean(r)`` there, 0 in float32, and the
whole tensor turns NaN; ``optim.Adafactor`` forms ``1 / sqrt(v)`` from the factors' inverse
roots and those entries get no update (``tests/keras_compat/test_adafactor_vs_keras.py``).

Keras accepts any numbers for the five arguments; values that make its own update meaningless
(``clip_threshold <= 0``: a zero or unbounded update; negative epsilons; ``beta_2_decay > 0``:
the moving average leaves [0, 1]) raise ``ValueError`` here when the object is made.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from optimist import optim
from optimist.training.optimizer_base import Optimizer, _number

__all__ = ["Adafactor"]


class Adafactor(Optimizer):
    """Keras' Adafactor: ``learning_rate=0.001, beta_2_decay=-0.8, epsilon_1=1e-30,
    epsilon_2=1e-3, clip_threshold=1.0, relative_step=True``; see the module docstring."""

    keras_name = "adafactor"
    torch_class = optim.Adafactor

    def __init__(
        self,
        learning_rate: float | Callable[[int], float] = 0.001,
        beta_2_decay: float = -0.8,
        epsilon_1: float = 1e-30,
        epsilon_2: float = 1e-3,
        clip_threshold: float = 1.0,
        relative_step: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(learning_rate, **kwargs)
        self.beta_2_decay = _number("beta_2_decay", beta_2_decay, low=-math.inf, high=0.0)
        self.epsilon_1 = _number("epsilon_1", epsilon_1)
        self.epsilon_2 = _number("epsilon_2", epsilon_2)
        self.clip_threshold = _number("clip_threshold", clip_threshold)
        if not self.clip_threshold > 0:
            raise ValueError(
                f"`clip_threshold` must be > 0. Received: clip_threshold={clip_threshold}"
            )
        self.relative_step = bool(relative_step)

    def _rule_config(self) -> dict[str, Any]:
        return {
            "beta_2_decay": self.beta_2_decay,
            "epsilon_1": self.epsilon_1,
            "epsilon_2": self.epsilon_2,
            "clip_threshold": self.clip_threshold,
            "relative_step": self.relative_step,
        }

    def _torch_kwargs(self) -> dict[str, Any]:
        return {
            "beta2_decay": self.beta_2_decay,
            "eps": (self.epsilon_1, self.epsilon_2),
            "d": max(1.0, self.clip_threshold),  # torch's check (_unchecked_group_values)
            "eps1_form": "add",
        }

    def _unchecked_group_values(self) -> dict[str, Any]:
        return {"d": self.clip_threshold}  # torch's check wants d >= 1
