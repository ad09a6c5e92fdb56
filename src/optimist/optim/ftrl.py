r"""FTRL-Proximal: follow the (proximally) regularized leader, per coordinate.

.. math::

    g_t &\leftarrow \nabla_\theta f_t(\theta_{t-1}) \quad (\text{negated if maximize}) \\
    n_t &\leftarrow n_{t-1} + g_t^2 \\
    \sigma_t &\leftarrow (n_t^{-p} - n_{t-1}^{-p}) / \gamma \\
    z_t &\leftarrow z_{t-1} + g_t + 2\lambda_s\theta_{t-1} - \sigma_t \theta_{t-1} \\
    \theta_t &\leftarrow \frac{\operatorname{clip}(z_t, -\lambda_1, \lambda_1) - z_t}
        {n_t^{-p} / \gamma + 2\lambda_2 + \beta / \gamma}

McMahan et al., "Ad Click Prediction: a View from the Trenches" (KDD 2013), Algorithm 1
(per-coordinate FTRL-Proximal), in TensorFlow's and Keras' generalised form: the power ``p`` of
the accumulator (``lr_power``; the paper's square root is ``p = -0.5``), the L2 term doubled
(``l2`` is half the paper's :math:`\lambda_2`), the paper's :math:`\beta` entering as
:math:`\beta / \gamma` (Keras adds ``beta / (2 lr)`` to ``l2``), and a shrinkage penalty
:math:`\lambda_s \lVert\theta\rVert^2` whose gradient :math:`2\lambda_s\theta` enters ``z``
but not ``n``. The weights are not stepped but recomputed from ``z`` and ``n`` every step
(coordinates with :math:`|z| \le \lambda_1` are exactly zero); the previous weights enter only
through :math:`\sigma_t\theta_{t-1}`. State keys as Keras: ``accumulator`` (``n``, starting at
``initial_accumulator_value``), ``linear`` (``z``); no ``step``. Defaults as TensorFlow's and
Keras' ``Ftrl``: ``lr=1e-3, lr_power=-0.5, initial_accumulator_value=0.1``, no regularization.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from optimist.optim.base import ParamsT, _number, init_arguments, scalar
from optimist.optim.engine import RuleOptimizer
from optimist.optim.rule import Rule, ScalarState, Slot
from optimist.optim.transforms import ChainConfig

__all__ = ["FTRL", "Ftrl"]


def _positive_lr(group: Any) -> float:
    """The group's learning rate, which FTRL divides by: it must be > 0."""
    lr = scalar(group["lr"])
    if not lr > 0:
        raise ValueError(f"Invalid lr: {lr} (Ftrl divides by the learning rate: it must be > 0)")
    return lr


def _scalars(group: Any, t: float, _: ScalarState) -> tuple[float, ...]:
    lr = _positive_lr(group)  # every step too: a schedule may reach 0 (Keras: NaN weights)
    l2 = group["l2"] + group["beta"] / (2.0 * lr)
    return (-group["lr_power"], lr, 2.0 * group["l2_shrinkage"], group["l1"], 2.0 * l2)


def _pow(x: Tensor, power: float) -> Tensor:
    """``x ** power`` element by element. On the CPU torch's pow runs SIMD (SLEEF) over a
    tensor's body and ``std::pow`` over its tail, which round differently, so an element's
    result would depend on where it sits (in a bucket of tensors, or alone); writing to a
    strided output keeps every element on ``std::pow`` (in double for float32, as the C++
    functor). The default ``power = 0.5`` is torch's sqrt, and 0 gives ones: no SIMD pow."""
    if power in (0.5, 0.0) or not x.is_cpu:
        return x.pow(power)
    return torch.pow(x, power, out=x.new_empty((*x.shape, 2))[..., 0])


def _eager(p: Tensor, g: Tensor, s: list, h: Sequence[float], flags: Sequence[bool]) -> None:
    power, lr, shrinkage, l1, l2 = h
    accumulator, linear = s
    new = accumulator + g * g  # n + g^2
    root = _pow(new, power)  # n^-lr_power (a square root by default)
    sigma = (root - _pow(accumulator, power)).div_(lr)
    linear.add_((g + shrinkage * p) - sigma.mul_(p))  # z += g + 2 l2s p - sigma p
    quadratic = root.div_(lr).add_(l2)
    p.copy_((linear.clamp(-l1, l1) - linear).div_(quadratic))
    accumulator.copy_(new)


FTRL = Rule(
    name="ftrl",
    slots=(Slot("accumulator", initial="initial_accumulator_value"), Slot("linear")),
    scalars=_scalars,
    eager=_eager,
    decoupled=lambda g: True,
    has_step=False,
)


class Ftrl(RuleOptimizer):
    """FTRL-Proximal (McMahan et al. 2013, Alg. 1), TensorFlow's and Keras' form.

    Args:
        params: parameters or param groups.
        lr: learning rate :math:`\\gamma` (default 1e-3; must be > 0: the rule divides by it).
        lr_power: the power :math:`p \\le 0` of the accumulator in the per-coordinate rate
            :math:`\\gamma / n^{-p}`; -0.5 is the paper's :math:`\\gamma / \\sqrt{n}`, 0 a fixed
            rate.
        initial_accumulator_value: :math:`n_0 \\ge 0`.
        l1: :math:`\\lambda_1`, L1 regularization (coordinates with :math:`|z| \\le \\lambda_1`
            become exactly 0).
        l2: :math:`\\lambda_2`, L2 regularization, :math:`2\\lambda_2` in the denominator
            (TensorFlow's and Keras' ``l2_regularization_strength``; the paper's :math:`\\lambda_2`
            is twice it).
        l2_shrinkage: :math:`\\lambda_s`, a magnitude penalty :math:`\\lambda_s\\theta^2`
            (Keras' ``l2_shrinkage_regularization_strength``).
        beta: the paper's :math:`\\beta \\ge 0`, added to :math:`n^{-p}` in the denominator.
        weight_decay: :math:`\\lambda`, decoupled (:math:`\\theta \\leftarrow \\theta(1 -
            \\gamma\\lambda)` before the update, as Keras' ``weight_decay``).
        maximize, foreach, fused, skip_nonfinite, state_dtype, stochastic_params, chain: see
            :class:`~optimist.optim.Optimizer`.
    """

    rule = FTRL
    nonnegative = ("initial_accumulator_value", "l1", "l2", "l2_shrinkage", "beta", "weight_decay")
    examples = (
        {"lr": 0.05},
        {"lr": 0.05, "lr_power": -0.7, "l1": 0.02, "l2": 0.1, "l2_shrinkage": 0.05, "beta": 0.5},
        {"lr": 0.05, "lr_power": 0.0, "initial_accumulator_value": 0.0, "weight_decay": 0.1},
    )

    def __init__(
        self,
        params: ParamsT,
        lr: float | Tensor = 1e-3,
        lr_power: float = -0.5,
        initial_accumulator_value: float = 0.1,
        l1: float = 0.0,
        l2: float = 0.0,
        l2_shrinkage: float = 0.0,
        beta: float = 0.0,
        weight_decay: float = 0.0,
        *,
        maximize: bool = False,
        foreach: bool | None = None,
        fused: bool | None = None,
        skip_nonfinite: bool = False,
        state_dtype: str | None = None,
        stochastic_params: bool = False,
        chain: ChainConfig | None = None,
    ) -> None:
        super().__init__(**init_arguments(locals()))

    def _check_group(self, group: dict[str, Any]) -> None:
        super()._check_group(group)
        _positive_lr(group)
        power = _number("lr_power", group["lr_power"])
        if not -math.inf < power <= 0:
            raise ValueError(
                f"Invalid lr_power: {group['lr_power']} (lr_power must be a finite number <= 0)"
            )
