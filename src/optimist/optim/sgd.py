r"""Stochastic gradient descent, with momentum, dampening, Nesterov momentum and weight decay.

.. math::

    g_t &\leftarrow \nabla_\theta f_t(\theta_{t-1}) \quad (\text{negated if maximize})
        \; + \lambda \theta_{t-1} \\
    b_t &\leftarrow g_t \text{ at the first step, else } \mu b_{t-1} + (1 - \tau) g_t \\
    g_t &\leftarrow g_t + \mu b_t \text{ (Nesterov) or } b_t \text{ (momentum } \mu \ne 0) \\
    \theta_t &\leftarrow \theta_{t-1} - \gamma g_t

Plain gradient descent, stochastic gradient descent and mini-batch gradient descent are all this
rule: which one you get is the batch of data the gradient was computed on (all of it, one
example, or a few). State key as torch.optim: ``momentum_buffer`` (only when momentum != 0).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import Tensor
from torch.optim.sgd import sgd as _torch_sgd

from optimist.optim.base import ParamsT, init_arguments, scalar
from optimist.optim.engine import RuleOptimizer
from optimist.optim.rule import Rule, ScalarState, Slot
from optimist.optim.transforms import ChainConfig

__all__ = ["SGD_RULE", "SGD"]


def _scalars(group: Any, t: float, _: ScalarState) -> tuple[float, ...]:
    return (group["momentum"], 1 - group["dampening"], -scalar(group["lr"]))


def _eager(p: Tensor, g: Tensor, s: list, h: Sequence[float], flags: Sequence[bool]) -> None:
    momentum, one_minus_dampening, neg_lr = h
    use_momentum, fresh, nesterov = flags
    if use_momentum:
        buf = s[0]
        if fresh:
            buf.copy_(g)  # b_1 = g_1
        else:
            buf.mul_(momentum).add_(g, alpha=one_minus_dampening)  # b = mu b + (1 - tau) g
        g = g.add(buf, alpha=momentum) if nesterov else buf
    p.add_(g, alpha=neg_lr)


SGD_RULE = Rule(
    name="sgd",
    slots=(Slot("momentum_buffer", when=lambda g: g["momentum"] != 0, fresh=True),),
    scalars=_scalars,
    eager=_eager,
    flags=lambda g: (g["momentum"] != 0, False, bool(g["nesterov"])),
    has_step=False,
    fresh_flag=1,
    torch_foreach=_torch_sgd,
)


class SGD(RuleOptimizer):
    """SGD: a drop-in ``torch.optim.SGD`` (same arguments, defaults and state keys).

    Args:
        params: parameters or param groups.
        lr: learning rate :math:`\\gamma` (default 1e-3, as torch.optim; the registry name
            ``"sgd"`` uses 0.01, as Keras).
        momentum: :math:`\\mu` (default 0).
        dampening: :math:`\\tau`, scales down new gradients in the momentum buffer.
        weight_decay: :math:`\\lambda`, an L2 penalty added to the gradient.
        nesterov: Nesterov momentum (needs momentum > 0 and dampening == 0).
        maximize, foreach, fused, differentiable, skip_nonfinite, state_dtype, stochastic_params,
            chain: see :class:`~optimist.optim.Optimizer`.
    """

    rule = SGD_RULE
    nonnegative = ("momentum", "dampening", "weight_decay")
    examples = ({"lr": 0.05, "momentum": 0.9, "nesterov": True, "weight_decay": 0.01},)

    def __init__(
        self,
        params: ParamsT,
        lr: float | Tensor = 1e-3,
        momentum: float = 0,
        dampening: float = 0,
        weight_decay: float = 0,
        nesterov: bool = False,
        *,
        maximize: bool = False,
        foreach: bool | None = None,
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
        if group["nesterov"] and (group["momentum"] <= 0 or group["dampening"] != 0):
            raise ValueError(
                "Nesterov momentum requires a momentum > 0 and zero dampening, got "
                f"momentum={group['momentum']}, dampening={group['dampening']}"
            )
