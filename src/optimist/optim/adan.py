r"""Adan: adaptive Nesterov momentum from gradient differences.

With :math:`d_t = g_t - g_{t-1}` (:math:`d_1 = 0`):

.. math::

    m_t &\leftarrow \beta_1 m_{t-1} + (1 - \beta_1) g_t \\
    v_t &\leftarrow \beta_2 v_{t-1} + (1 - \beta_2) d_t \\
    n_t &\leftarrow \beta_3 n_{t-1} + (1 - \beta_3) (g_t + \beta_2 d_t)^2 \\
    \eta_t &\leftarrow \gamma / (\sqrt{n_t / (1 - \beta_3^t)} + \epsilon) \\
    \theta_t &\leftarrow \bigl(\theta_{t-1} - \eta_t \bigl(m_t / (1 - \beta_1^t)
        + \beta_2 v_t / (1 - \beta_2^t)\bigr)\bigr) / (1 + \gamma\lambda)

Xie et al., "Adan: Adaptive Nesterov Momentum Algorithm for Faster Optimizing Deep Models"
(2022, TPAMI 2024), Algorithm 1, in the authors' code's convention (sail-sg/Adan): the paper's
:math:`\beta` are written as :math:`1-\beta` (so ``betas=(0.98, 0.92, 0.99)`` are the paper's
(0.02, 0.08, 0.01)), each moment is bias-corrected, epsilon is added after the corrected square
root, and the weight decay is the paper's proximal step (divide by :math:`1 + \gamma\lambda`);
``no_prox=True`` gives the decoupled form :math:`\theta(1 - \gamma\lambda)` before the step
instead, as their flag. Their ``max_grad_norm`` is optimist's
``chain(clip_by_global_norm(...), ...)``. Warning: Optax's ``adan`` (0.2.8) weights the gradient
difference by :math:`1-\beta_2` in the update and in :math:`n_t` where the paper and the
authors' code use :math:`\beta_2` (the paper's :math:`1-\beta_2`); the two agree only at
:math:`\beta_2 = 0.5`, where the tests compare them. State keys as theirs: ``step``, ``exp_avg``,
``exp_avg_sq``, ``exp_avg_diff``, ``neg_pre_grad`` (minus the previous gradient: 4 state
tensors per parameter).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from torch import Tensor

from optimist.optim.base import ParamsT, init_arguments, scalar
from optimist.optim.engine import RuleOptimizer
from optimist.optim.rule import Rule, ScalarState, Slot
from optimist.optim.transforms import ChainConfig

__all__ = ["ADAN", "Adan"]


def _scalars(group: Any, t: float, _: ScalarState) -> tuple[float, ...]:
    beta1, beta2, beta3 = (scalar(b) for b in group["betas"])
    lr = scalar(group["lr"])
    prox = 1.0 if group["no_prox"] else 1 + lr * scalar(group["weight_decay"])
    return (
        beta1, 1 - beta1, beta2, 1 - beta2, beta3, 1 - beta3, math.sqrt(1 - beta3**t),
        group["eps"], -lr / (1 - beta1**t), -lr * beta2 / (1 - beta2**t), prox,
    )  # fmt: skip


def _eager(p: Tensor, g: Tensor, s: list, h: Sequence[float], flags: Sequence[bool]) -> None:
    b1, omb1, b2, omb2, b3, omb3, bc3_sqrt, eps, s1, s2, prox = h
    m, n, v, neg_prev = s
    diff = g.mul(0) if flags[0] else g + neg_prev  # g_t - g_{t-1}; 0 on the first step
    m.mul_(b1).add_(g, alpha=omb1)
    v.mul_(b2).add_(diff, alpha=omb2)
    u = diff.mul_(b2).add_(g)
    n.mul_(b3).addcmul_(u, u, value=omb3)
    denom = (n.sqrt() / bc3_sqrt).add_(eps)
    p.addcdiv_(m, denom, value=s1)
    p.addcdiv_(v, denom, value=s2)
    if prox != 1.0:
        p.div_(prox)
    neg_prev.copy_(g).neg_()


ADAN = Rule(
    name="adan",
    slots=(
        Slot("exp_avg"),
        Slot("exp_avg_sq"),
        Slot("exp_avg_diff"),
        Slot("neg_pre_grad", fresh=True),
    ),
    scalars=_scalars,
    eager=_eager,
    flags=lambda g: (False,),
    decoupled=lambda g: True,
    engine_decay=lambda g: bool(g["no_prox"]),  # the proximal division is the rule's
    fresh_flag=0,
)


class Adan(RuleOptimizer):
    """Adan (Xie et al. 2022); see the module docstring.

    Args:
        params: parameters or param groups.
        lr: learning rate :math:`\\gamma` (default 1e-3).
        betas: :math:`(\\beta_1, \\beta_2, \\beta_3)` for the gradient, gradient-difference
            and squared-update averages (default (0.98, 0.92, 0.99)).
        eps: :math:`\\epsilon` added to the denominator (default 1e-8).
        weight_decay: :math:`\\lambda`; proximal (default) or, with ``no_prox``, decoupled.
        no_prox: decay as :math:`\\theta(1 - \\gamma\\lambda)` before the step.
        maximize, foreach, fused, skip_nonfinite, state_dtype, stochastic_params, chain: see
            :class:`~optimist.optim.engine.RuleOptimizer`.
    """

    rule = ADAN
    nonnegative = ("eps", "weight_decay")
    examples = (
        {"lr": 0.01, "weight_decay": 0.1},
        {"lr": 0.01, "weight_decay": 0.1, "no_prox": True, "betas": (0.9, 0.9, 0.95)},
    )

    def __init__(
        self,
        params: ParamsT,
        lr: float | Tensor = 1e-3,
        betas: tuple[float, float, float] = (0.98, 0.92, 0.99),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        no_prox: bool = False,
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
