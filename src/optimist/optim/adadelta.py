r"""Adadelta: step sizes from the ratio of running RMS of updates and of gradients.

.. math::

    g_t &\leftarrow \nabla_\theta f_t(\theta_{t-1}) \quad (\text{negated if maximize})
        \; + \lambda \theta_{t-1} \\
    v_t &\leftarrow \rho v_{t-1} + (1 - \rho) g_t^2 \\
    \Delta_t &\leftarrow \frac{\sqrt{u_{t-1} + \epsilon}}{\sqrt{v_t + \epsilon}} g_t \\
    u_t &\leftarrow \rho u_{t-1} + (1 - \rho) \Delta_t^2 \\
    \theta_t &\leftarrow \theta_{t-1} - \gamma \Delta_t

Zeiler, "ADADELTA: An Adaptive Learning Rate Method" (2012). State keys as torch.optim:
``step``, ``square_avg`` (:math:`v`), ``acc_delta`` (:math:`u`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import Tensor
from torch.optim.adadelta import adadelta as _torch_adadelta

from optimist.optim.base import (
    ParamsT,
    check_unit_interval,
    init_arguments,
    scalar,
)
from optimist.optim.engine import RuleOptimizer
from optimist.optim.rule import Rule, ScalarState, Slot
from optimist.optim.transforms import ChainConfig

__all__ = ["ADADELTA", "Adadelta"]


def _scalars(group: Any, t: float, _: ScalarState) -> tuple[float, ...]:
    rho = group["rho"]
    return (rho, 1 - rho, group["eps"], -scalar(group["lr"]))


def _eager(p: Tensor, g: Tensor, s: list, h: Sequence[float], flags: Sequence[bool]) -> None:
    rho, one_minus_rho, eps, neg_lr = h
    v, u = s
    v.mul_(rho).addcmul_(g, g, value=one_minus_rho)  # v = rho v + (1 - rho) g^2
    std = v.add(eps).sqrt_()
    delta = u.add(eps).sqrt_().div_(std).mul_(g)  # delta = sqrt(u + eps) / sqrt(v + eps) g
    u.mul_(rho).addcmul_(delta, delta, value=one_minus_rho)  # u = rho u + (1 - rho) delta^2
    p.add_(delta, alpha=neg_lr)


ADADELTA = Rule(
    name="adadelta",
    slots=(Slot("square_avg"), Slot("acc_delta")),
    scalars=_scalars,
    eager=_eager,
    torch_foreach=_torch_adadelta,
)


class Adadelta(RuleOptimizer):
    """Adadelta: a drop-in ``torch.optim.Adadelta``.

    Args:
        params: parameters or param groups.
        lr: :math:`\\gamma`, scales the update (default 1.0, as the paper).
        rho: :math:`\\rho`, decay rate of both running averages, in [0, 1].
        eps: :math:`\\epsilon` inside both square roots.
        weight_decay: :math:`\\lambda`, an L2 penalty added to the gradient.
        maximize, foreach, fused, capturable, differentiable, skip_nonfinite, state_dtype,
            stochastic_params, chain: see :class:`~optimist.optim.Optimizer`.
    """

    rule = ADADELTA
    nonnegative = ("eps", "weight_decay")
    examples = ({"lr": 0.5, "weight_decay": 0.01},)

    def __init__(
        self,
        params: ParamsT,
        lr: float | Tensor = 1.0,
        rho: float = 0.9,
        eps: float = 1e-6,
        weight_decay: float = 0,
        foreach: bool | None = None,
        *,
        capturable: bool = False,
        maximize: bool = False,
        differentiable: bool = False,
        fused: bool | None = None,
        skip_nonfinite: bool = False,
        state_dtype: str | None = None,
        stochastic_params: bool = False,
        chain: ChainConfig | None = None,
    ) -> None:
        super().__init__(**init_arguments(locals()))

    def _check_group(self, group: dict[str, Any]) -> None:
        self._check_common(group)
        check_unit_interval("rho", group["rho"], closed=True)
