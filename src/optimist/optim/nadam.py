r"""NAdam: Adam with Nesterov momentum and a momentum schedule.

.. math::

    g_t &\leftarrow \nabla_\theta f_t(\theta_{t-1}) \quad (\text{negated if maximize})
        \; + \lambda \theta_{t-1} \text{ (or decoupled: }
        \theta_{t-1} \leftarrow \theta_{t-1}(1 - \gamma\lambda)) \\
    \mu_t &\leftarrow \beta_1 (1 - \tfrac12 \, 0.96^{t \psi}), \quad
        \mu_{t+1} \leftarrow \beta_1 (1 - \tfrac12 \, 0.96^{(t+1) \psi}) \\
    P_t &\leftarrow P_{t-1} \mu_t \quad (\text{the product } \textstyle\prod_{i \le t} \mu_i) \\
    m_t &\leftarrow \beta_1 m_{t-1} + (1 - \beta_1) g_t, \quad
        v_t \leftarrow \beta_2 v_{t-1} + (1 - \beta_2) g_t^2 \\
    d_t &\leftarrow \sqrt{v_t / (1 - \beta_2^t)} + \epsilon \\
    \theta_t &\leftarrow \theta_{t-1}
        - \gamma \frac{1 - \mu_t}{1 - P_t} \frac{g_t}{d_t}
        - \gamma \frac{\mu_{t+1}}{1 - P_t \mu_{t+1}} \frac{m_t}{d_t}

Dozat, "Incorporating Nesterov Momentum into Adam" (ICLR workshop 2016). State keys as
torch.optim: ``step``, ``mu_product`` (a 0-dim tensor, :math:`P_t`), ``exp_avg``, ``exp_avg_sq``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import Tensor
from torch.optim.nadam import nadam as _torch_nadam

from optimist.optim.base import (
    ParamsT,
    init_arguments,
    scalar,
)
from optimist.optim.engine import RuleOptimizer
from optimist.optim.rule import Rule, ScalarState, Slot
from optimist.optim.transforms import ChainConfig

__all__ = ["NADAM", "NAdam"]


def _scalars(group: Any, t: float, scalars: ScalarState) -> tuple[float, ...]:
    beta1, beta2 = (scalar(b) for b in group["betas"])
    lr, momentum_decay = scalar(group["lr"]), group["momentum_decay"]
    mu = beta1 * (1.0 - 0.5 * 0.96 ** (t * momentum_decay))
    mu_next = beta1 * (1.0 - 0.5 * 0.96 ** ((t + 1) * momentum_decay))
    mu_product = scalars.scale("mu_product", mu)  # kept as a tensor, as torch.optim does
    mu_product_next = mu_product * mu_next
    c_grad = -lr * (1.0 - mu) / (1.0 - mu_product)
    c_avg = -lr * mu_next / (1.0 - mu_product_next)
    return (1 - beta1, beta2, 1 - beta2, 1 - beta2**t, group["eps"], c_grad, c_avg)


def _eager(p: Tensor, g: Tensor, s: list, h: Sequence[float], flags: Sequence[bool]) -> None:
    w1, beta2, one_minus_beta2, bias_correction2, eps, c_grad, c_avg = h
    m, v = s
    m.lerp_(g, w1)
    v.mul_(beta2).addcmul_(g, g, value=one_minus_beta2)
    denom = v.div(bias_correction2).sqrt().add_(eps)
    p.addcdiv_(g, denom, value=c_grad)
    p.addcdiv_(m, denom, value=c_avg)


NADAM = Rule(
    name="nadam",
    slots=(Slot("exp_avg"), Slot("exp_avg_sq")),
    scalars=_scalars,
    eager=_eager,
    decoupled=lambda g: bool(g["decoupled_weight_decay"]),
    scalar_state=(("mu_product", 1.0),),
    torch_foreach=_torch_nadam,
)


class NAdam(RuleOptimizer):
    """NAdam: a drop-in ``torch.optim.NAdam``.

    Args:
        params: parameters or param groups.
        lr: learning rate :math:`\\gamma` (default 2e-3).
        betas: :math:`(\\beta_1, \\beta_2)`.
        eps: :math:`\\epsilon` added to the denominator.
        weight_decay: :math:`\\lambda`.
        momentum_decay: :math:`\\psi` of the momentum schedule (default 4e-3).
        decoupled_weight_decay: decay the weights directly (NAdamW) instead of an L2 penalty.
        maximize, foreach, fused, capturable, differentiable, skip_nonfinite, state_dtype,
            stochastic_params, chain: see :class:`~optimist.optim.Optimizer`.
    """

    rule = NADAM
    nonnegative = ("eps", "weight_decay", "momentum_decay")
    examples = ({"lr": 0.01, "decoupled_weight_decay": True, "weight_decay": 0.01},)

    def __init__(
        self,
        params: ParamsT,
        lr: float | Tensor = 2e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0,
        momentum_decay: float = 4e-3,
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

    _scalar_state_keys = ("step", "mu_product")
