r"""Adagrad: per-coordinate learning rates from the sum of squared gradients.

.. math::

    g_t &\leftarrow \nabla_\theta f_t(\theta_{t-1}) \quad (\text{negated if maximize})
        \; + \lambda \theta_{t-1} \\
    \tilde\gamma_t &\leftarrow \gamma / (1 + (t - 1)\eta) \\
    s_t &\leftarrow s_{t-1} + g_t^2 \\
    \theta_t &\leftarrow \theta_{t-1} - \tilde\gamma_t \, g_t / (\sqrt{s_t} + \epsilon)

Duchi, Hazan & Singer, "Adaptive Subgradient Methods for Online Learning and Stochastic
Optimization" (JMLR 2011). State keys as torch.optim: ``step``, ``sum``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import Tensor
from torch.optim.adagrad import adagrad as _torch_adagrad

from optimist.optim.base import ParamsT, init_arguments, scalar
from optimist.optim.engine import RuleOptimizer
from optimist.optim.rule import Rule, ScalarState, Slot
from optimist.optim.transforms import ChainConfig

__all__ = ["ADAGRAD", "Adagrad"]


def _scalars(group: Any, t: float, _: ScalarState) -> tuple[float, ...]:
    clr = scalar(group["lr"]) / (1 + (t - 1) * group["lr_decay"])
    return (group["eps"], -clr)


def _eager(p: Tensor, g: Tensor, s: list, h: Sequence[float], flags: Sequence[bool]) -> None:
    eps, neg_clr = h
    total = s[0]
    total.addcmul_(g, g, value=1)  # s = s + g^2
    p.addcdiv_(g, total.sqrt().add_(eps), value=neg_clr)


ADAGRAD = Rule(
    name="adagrad",
    slots=(Slot("sum", initial="initial_accumulator_value"),),
    scalars=_scalars,
    eager=_eager,
    torch_foreach=_torch_adagrad,
)


class Adagrad(RuleOptimizer):
    """Adagrad: a drop-in ``torch.optim.Adagrad`` (dense gradients only).

    Args:
        params: parameters or param groups.
        lr: learning rate :math:`\\gamma` (default 1e-2).
        lr_decay: :math:`\\eta`, the learning rate decays as :math:`1 / (1 + (t-1)\\eta)`.
        weight_decay: :math:`\\lambda`, an L2 penalty added to the gradient.
        initial_accumulator_value: the starting value of the sum :math:`s_0`.
        eps: :math:`\\epsilon` added to the denominator.
        maximize, foreach, fused, differentiable, skip_nonfinite, state_dtype, stochastic_params,
            chain: see :class:`~optimist.optim.Optimizer`.
    """

    rule = ADAGRAD
    examples = ({"lr": 0.05, "lr_decay": 0.01, "initial_accumulator_value": 0.1},)
    nonnegative = ("lr_decay", "weight_decay", "initial_accumulator_value", "eps")

    def __init__(
        self,
        params: ParamsT,
        lr: float | Tensor = 1e-2,
        lr_decay: float = 0,
        weight_decay: float = 0,
        initial_accumulator_value: float = 0,
        eps: float = 1e-10,
        foreach: bool | None = None,
        *,
        maximize: bool = False,
        differentiable: bool = False,
        fused: bool | None = None,
        skip_nonfinite: bool = False,
        state_dtype: str | None = None,
        stochastic_params: bool = False,
        chain: ChainConfig | None = None,
    ) -> None:
        super().__init__(**init_arguments(locals()))
        # torch.optim.Adagrad creates its state eagerly; so do we, so state_dicts line up
        for group in self.param_groups:
            for p in group["params"]:
                if not self.state[p]:
                    self._init_state(p, self.state[p], group)
