r"""RAdam: Adam whose adaptive step is switched on only once the variance estimate is reliable.

.. math::

    g_t &\leftarrow \nabla_\theta f_t(\theta_{t-1}) \quad (\text{negated if maximize})
        \; + \lambda \theta_{t-1} \text{ (or decoupled: }
        \theta_{t-1} \leftarrow \theta_{t-1}(1 - \gamma\lambda)) \\
    m_t &\leftarrow \beta_1 m_{t-1} + (1 - \beta_1) g_t, \quad
        v_t \leftarrow \beta_2 v_{t-1} + (1 - \beta_2) g_t^2 \\
    \hat m_t &\leftarrow m_t / (1 - \beta_1^t) \\
    \rho_\infty &= 2 / (1 - \beta_2) - 1, \quad
        \rho_t = \rho_\infty - 2 t \beta_2^t / (1 - \beta_2^t) \\
    \theta_t &\leftarrow \theta_{t-1} - \gamma \hat m_t \, r_t
        \frac{\sqrt{1 - \beta_2^t}}{\sqrt{v_t} + \epsilon}, \quad
        r_t = \sqrt{\frac{(\rho_t - 4)(\rho_t - 2)\rho_\infty}
                         {(\rho_\infty - 4)(\rho_\infty - 2)\rho_t}}
        \quad \text{if } \rho_t > 5 \\
    \theta_t &\leftarrow \theta_{t-1} - \gamma \hat m_t \quad \text{otherwise (SGD with momentum)}

Liu et al., "On the Variance of the Adaptive Learning Rate and Beyond" (ICLR 2020). State keys
as torch.optim: ``step``, ``exp_avg``, ``exp_avg_sq``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from torch import Tensor
from torch.optim.radam import radam as _torch_radam

from optimist.optim.base import (
    ParamsT,
    init_arguments,
    scalar,
)
from optimist.optim.engine import RuleOptimizer
from optimist.optim.rule import Rule, ScalarState, Slot
from optimist.optim.transforms import ChainConfig

__all__ = ["RADAM", "RAdam"]


def _scalars(group: Any, t: float, _: ScalarState) -> tuple[float, ...]:
    beta1, beta2 = (scalar(b) for b in group["betas"])
    bias_correction1 = 1 - beta1**t
    bias_correction2 = 1 - beta2**t
    rho_inf = 2 / (1 - beta2) - 1
    rho_t = rho_inf - 2 * t * beta2**t / bias_correction2
    rect = 0.0
    if rho_t > 5.0:
        rect = math.sqrt(
            (rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t)
        )
    return (
        1 - beta1,
        beta2,
        1 - beta2,
        bias_correction1,
        scalar(group["lr"]),
        math.sqrt(bias_correction2),
        rect,
        group["eps"],
    )


def _eager(p: Tensor, g: Tensor, s: list, h: Sequence[float], flags: Sequence[bool]) -> None:
    w1, beta2, one_minus_beta2, bias_correction1, lr, bc2_sqrt, rect, eps = h
    m, v = s
    m.lerp_(g, w1)
    v.mul_(beta2).addcmul_(g, g, value=one_minus_beta2)
    m_hat = m / bias_correction1
    if rect > 0:  # the variance is tractable: rectified adaptive step
        adaptive = bc2_sqrt / v.sqrt().add_(eps)
        p.add_(m_hat * lr * adaptive * rect, alpha=-1.0)
    else:
        p.add_(m_hat * lr, alpha=-1.0)


RADAM = Rule(
    name="radam",
    slots=(Slot("exp_avg"), Slot("exp_avg_sq")),
    scalars=_scalars,
    eager=_eager,
    decoupled=lambda g: bool(g["decoupled_weight_decay"]),
    torch_foreach=_torch_radam,
)


class RAdam(RuleOptimizer):
    """RAdam: a drop-in ``torch.optim.RAdam``.

    Args:
        params: parameters or param groups.
        lr: learning rate :math:`\\gamma` (default 1e-3).
        betas: :math:`(\\beta_1, \\beta_2)`.
        eps: :math:`\\epsilon` added to the denominator.
        weight_decay: :math:`\\lambda`.
        decoupled_weight_decay: decay the weights directly (RAdamW) instead of an L2 penalty.
        maximize, foreach, fused, capturable, differentiable, skip_nonfinite, state_dtype,
            stochastic_params, chain: see :class:`~optimist.optim.Optimizer`.
    """

    rule = RADAM
    nonnegative = ("eps", "weight_decay")
    examples = ({"lr": 0.01, "weight_decay": 0.01},)

    def __init__(
        self,
        params: ParamsT,
        lr: float | Tensor = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0,
        decoupled_weight_decay: bool = False,
        *,
        foreach: bool | None = None,
        maximize: bool = False,
        capturable: bool = False,
        differentiable: bool = False,
        fused: bool | None = None,
        skip_nonfinite: bool = False,
        state_dtype: str | None = None,
        stochastic_params: bool = False,
        chain: ChainConfig | None = None,
    ) -> None:
        super().__init__(**init_arguments(locals()))
