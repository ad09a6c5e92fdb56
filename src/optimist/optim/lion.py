r"""Lion: evolved sign momentum.

.. math::

    c_t &\leftarrow \beta_1 m_{t-1} + (1 - \beta_1) g_t \\
    \theta_t &\leftarrow \theta_{t-1} - \gamma\,(\operatorname{sign}(c_t) + \lambda\theta_{t-1}) \\
    m_t &\leftarrow \beta_2 m_{t-1} + (1 - \beta_2) g_t

Chen et al., "Symbolic Discovery of Optimization Algorithms" (2023), Algorithm 2 (decoupled
weight decay, as the authors' reference code and ``lion-pytorch``: :math:`\theta` is first
multiplied by :math:`1 - \gamma\lambda`). State key: ``exp_avg`` (as ``lion-pytorch``); no
``step``. Defaults as the paper's code: ``lr=1e-4, betas=(0.9, 0.99), weight_decay=0``; the
paper suggests a learning rate 3-10x smaller than AdamW's and a weight decay 3-10x larger.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import Tensor

from optimist.optim.base import ParamsT, init_arguments, scalar
from optimist.optim.engine import RuleOptimizer
from optimist.optim.rule import Rule, ScalarState, Slot
from optimist.optim.transforms import ChainConfig

__all__ = ["LION", "Lion"]


def _scalars(group: Any, t: float, _: ScalarState) -> tuple[float, ...]:
    beta1, beta2 = (scalar(b) for b in group["betas"])
    return (beta1, 1 - beta1, beta2, 1 - beta2, -scalar(group["lr"]))


def _eager(p: Tensor, g: Tensor, s: list, h: Sequence[float], flags: Sequence[bool]) -> None:
    beta1, one_minus_beta1, beta2, one_minus_beta2, neg_lr = h
    m = s[0]
    c = m.mul(beta1).add_(g, alpha=one_minus_beta1)  # c = b1 m + (1 - b1) g
    p.add_(c.sign_(), alpha=neg_lr)  # p = p - lr sign(c)
    m.mul_(beta2).add_(g, alpha=one_minus_beta2)  # m = b2 m + (1 - b2) g


LION = Rule(
    name="lion",
    slots=(Slot("exp_avg"),),
    scalars=_scalars,
    eager=_eager,
    decoupled=lambda g: True,
    has_step=False,
)


class Lion(RuleOptimizer):
    """Lion (Chen et al. 2023), with decoupled weight decay.

    Args:
        params: parameters or param groups.
        lr: learning rate :math:`\\gamma` (default 1e-4).
        betas: :math:`(\\beta_1, \\beta_2)`: interpolation for the update's sign, and the
            momentum's decay.
        weight_decay: :math:`\\lambda`, decoupled (scaled by ``lr``).
        maximize, foreach, fused, skip_nonfinite, state_dtype, stochastic_params, chain: see
            :class:`~optimist.optim.Optimizer`.
    """

    rule = LION
    nonnegative = ("weight_decay",)
    examples = ({"lr": 1e-3, "weight_decay": 0.1},)

    def __init__(
        self,
        params: ParamsT,
        lr: float | Tensor = 1e-4,
        betas: tuple[float, float] = (0.9, 0.99),
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
