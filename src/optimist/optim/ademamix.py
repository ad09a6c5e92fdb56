r"""AdEMAMix: Adam with a mixture of a fast and a slow gradient EMA.

.. math::

    m^{(1)}_t &\leftarrow \beta_1 m^{(1)}_{t-1} + (1 - \beta_1) g_t \\
    m^{(2)}_t &\leftarrow \beta_3(t)\, m^{(2)}_{t-1} + (1 - \beta_3(t)) g_t \\
    v_t &\leftarrow \beta_2 v_{t-1} + (1 - \beta_2) g_t^2 \\
    \theta_t &\leftarrow \theta_{t-1}(1 - \gamma\lambda) - \gamma\,
        \frac{m^{(1)}_t / (1 - \beta_1^t) + \alpha(t)\, m^{(2)}_t}
             {\sqrt{v_t} / \sqrt{1 - \beta_2^t} + \epsilon}

Pagliardini, Ablin & Grangier, "The AdEMAMix Optimizer: Better, Faster, Older" (2024),
Algorithm 1, with its schedulers (eqs. 2 and 3): :math:`\alpha(t) = \min(t\alpha/T_\alpha,
\alpha)` and :math:`\beta_3(t)` warmed up from :math:`\beta_1` to :math:`\beta_3` linearly in the
half-life :math:`\ln 0.5 / \ln\beta - 1` over :math:`T_{\beta_3}` steps; without ``alpha_warmup``
/ ``beta3_warmup`` they are constant. The slow EMA is not bias-corrected (the paper's choice).
Conventions and defaults as the authors' code (apple/ml-ademamix): epsilon added after the
bias-corrected square root, decoupled weight decay, ``betas=(0.9, 0.999, 0.9999)``, ``alpha=2``;
the half-life uses ``log(beta + 1e-8)`` as theirs. Optax's ``contrib.ademamix`` is the same
rule (tested). State keys as the authors': ``step``, ``exp_avg_fast``, ``exp_avg_slow``,
``exp_avg_sq``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from torch import Tensor

from optimist.optim.base import (
    ParamsT,
    check_betas3,
    init_arguments,
    scalar,
)
from optimist.optim.engine import RuleOptimizer
from optimist.optim.rule import Rule, ScalarState, Slot
from optimist.optim.transforms import ChainConfig

__all__ = ["ADEMAMIX", "AdEMAMix", "alpha_schedule", "beta3_schedule", "check_betas3"]


def alpha_schedule(t: float, alpha: float, warmup: int | None) -> float:
    """:math:`\\alpha(t)`: linear from 0 to ``alpha`` over ``warmup`` steps (eq. 3)."""
    if warmup is None or t >= warmup:
        return alpha
    return t / warmup * alpha


def beta3_schedule(t: float, beta1: float, beta3: float, warmup: int | None) -> float:
    """:math:`\\beta_3(t)`: from ``beta1`` to ``beta3``, linear in the half-life (eq. 2)."""
    if warmup is None or t >= warmup:
        return beta3

    def half_life(beta: float) -> float:
        return math.log(0.5) / math.log(beta + 1e-8) - 1

    a = t / warmup
    return 0.5 ** (1 / ((1 - a) * half_life(beta1) + a * half_life(beta3) + 1))


def _scalars(group: Any, t: float, _: ScalarState) -> tuple[float, ...]:
    beta1, beta2, beta3 = (scalar(b) for b in group["betas"])
    b3 = beta3_schedule(t, beta1, beta3, group["beta3_warmup"])
    alpha = alpha_schedule(t, scalar(group["alpha"]), group["alpha_warmup"])
    bc1 = 1 - beta1**t
    bc2_sqrt = math.sqrt(1 - beta2**t)
    lr = scalar(group["lr"])
    return (beta1, 1 - beta1, beta2, 1 - beta2, b3, 1 - b3, bc1, bc2_sqrt, group["eps"], alpha, -lr)


def _eager(p: Tensor, g: Tensor, s: list, h: Sequence[float], flags: Sequence[bool]) -> None:
    b1, omb1, b2, omb2, b3, omb3, bc1, bc2_sqrt, eps, alpha, neg_lr = h
    fast, slow, v = s
    fast.mul_(b1).add_(g, alpha=omb1)
    slow.mul_(b3).add_(g, alpha=omb3)
    v.mul_(b2).addcmul_(g, g, value=omb2)
    denom = (v.sqrt() / bc2_sqrt).add_(eps)
    update = (fast.div(bc1) + alpha * slow) / denom
    p.add_(neg_lr * update)


ADEMAMIX = Rule(
    name="ademamix",
    slots=(Slot("exp_avg_fast"), Slot("exp_avg_slow"), Slot("exp_avg_sq")),
    scalars=_scalars,
    eager=_eager,
    decoupled=lambda g: True,
)


def _check_warmup(name: str, value: Any) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ValueError(f"Invalid {name}: {value!r} ({name} must be None or an integer >= 1)")


class AdEMAMix(RuleOptimizer):
    """AdEMAMix (Pagliardini et al. 2024); see the module docstring.

    Args:
        params: parameters or param groups.
        lr: learning rate :math:`\\gamma` (default 1e-3).
        betas: :math:`(\\beta_1, \\beta_2, \\beta_3)`: fast EMA, second moment, slow EMA.
        alpha: weight :math:`\\alpha` of the slow EMA (default 2; the paper uses 5-8 for LLMs).
        beta3_warmup, alpha_warmup: steps of the :math:`\\beta_3` and :math:`\\alpha` warmups
            (None: constant; the paper sets both to the run's length).
        eps: :math:`\\epsilon` added to the denominator.
        weight_decay: :math:`\\lambda`, decoupled (scaled by ``lr``).
        maximize, foreach, fused, skip_nonfinite, state_dtype, stochastic_params, chain: see
            :class:`~optimist.optim.engine.RuleOptimizer`.
    """

    rule = ADEMAMIX
    nonnegative = ("alpha", "eps", "weight_decay")
    examples = (
        {"lr": 0.01, "weight_decay": 0.1},
        {"lr": 0.01, "alpha": 5.0, "beta3_warmup": 12, "alpha_warmup": 9},
    )

    def __init__(
        self,
        params: ParamsT,
        lr: float | Tensor = 1e-3,
        betas: tuple[float, float, float] = (0.9, 0.999, 0.9999),
        alpha: float = 2.0,
        beta3_warmup: int | None = None,
        alpha_warmup: int | None = None,
        eps: float = 1e-8,
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
        self._check_common(group)
        _check_warmup("beta3_warmup", group["beta3_warmup"])
        _check_warmup("alpha_warmup", group["alpha_warmup"])
