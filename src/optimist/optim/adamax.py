r"""Adamax: Adam with the infinity norm in place of the second moment.

.. math::

    g_t &\leftarrow \nabla_\theta f_t(\theta_{t-1}) \quad (\text{negated if maximize})
        \; + \lambda \theta_{t-1} \\
    m_t &\leftarrow \beta_1 m_{t-1} + (1 - \beta_1) g_t \\
    u_t &\leftarrow \max(\beta_2 u_{t-1}, |g_t| + \epsilon) \\
    \theta_t &\leftarrow \theta_{t-1} - \frac{\gamma}{1 - \beta_1^t} \frac{m_t}{u_t}

Kingma & Ba, "Adam: A Method for Stochastic Optimization" (2014), section 7. State keys as
torch.optim: ``step``, ``exp_avg``, ``exp_inf``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor
from torch.optim.adamax import adamax as _torch_adamax

from optimist.optim.base import ParamsT, init_arguments, scalar
from optimist.optim.engine import RuleOptimizer
from optimist.optim.rule import Rule, ScalarState, Slot
from optimist.optim.transforms import ChainConfig

__all__ = ["ADAMAX", "Adamax"]


def _scalars(group: Any, t: float, _: ScalarState) -> tuple[float, ...]:
    beta1, beta2 = (scalar(b) for b in group["betas"])
    return (1 - beta1, beta2, group["eps"], -scalar(group["lr"]) / (1 - beta1**t))


def _eager(p: Tensor, g: Tensor, s: list, h: Sequence[float], flags: Sequence[bool]) -> None:
    w1, beta2, eps, neg_clr = h
    m, u = s
    m.lerp_(g, w1)  # m = b1 m + (1 - b1) g
    torch.maximum(u.mul_(beta2), g.abs().add_(eps), out=u)  # u = max(b2 u, |g| + eps)
    p.addcdiv_(m, u, value=neg_clr)


ADAMAX = Rule(
    name="adamax",
    slots=(Slot("exp_avg"), Slot("exp_inf")),
    scalars=_scalars,
    eager=_eager,
    torch_foreach=_torch_adamax,
)


class Adamax(RuleOptimizer):
    """Adamax: a drop-in ``torch.optim.Adamax``.

    Args:
        params: parameters or param groups.
        lr: learning rate :math:`\\gamma` (default 2e-3).
        betas: :math:`(\\beta_1, \\beta_2)`.
        eps: :math:`\\epsilon` added to :math:`|g_t|`.
        weight_decay: :math:`\\lambda`, an L2 penalty added to the gradient.
        maximize, foreach, fused, capturable, differentiable, skip_nonfinite, state_dtype,
            stochastic_params, chain: see :class:`~optimist.optim.Optimizer`.
    """

    rule = ADAMAX
    nonnegative = ("eps", "weight_decay")
    examples = ({"lr": 0.01, "weight_decay": 0.01},)

    def __init__(
        self,
        params: ParamsT,
        lr: float | Tensor = 2e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0,
        foreach: bool | None = None,
        *,
        maximize: bool = False,
        differentiable: bool = False,
        capturable: bool = False,
        fused: bool | None = None,
        skip_nonfinite: bool = False,
        state_dtype: str | None = None,
        stochastic_params: bool = False,
        chain: ChainConfig | None = None,
    ) -> None:
        super().__init__(**init_arguments(locals()))
