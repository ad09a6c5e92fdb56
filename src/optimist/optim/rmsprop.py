r"""RMSprop: divide the gradient by a running root-mean-square of recent gradients.

.. math::

    g_t &\leftarrow \nabla_\theta f_t(\theta_{t-1}) \quad (\text{negated if maximize})
        \; + \lambda \theta_{t-1} \\
    v_t &\leftarrow \alpha v_{t-1} + (1 - \alpha) g_t^2 \\
    d_t &\leftarrow \sqrt{v_t - \bar g_t^2} + \epsilon \text{ with }
        \bar g_t = \alpha \bar g_{t-1} + (1 - \alpha) g_t \text{ (centered), else }
        \sqrt{v_t} + \epsilon \\
    b_t &\leftarrow \mu b_{t-1} + g_t / d_t, \quad \theta_t \leftarrow \theta_{t-1} - \gamma b_t
        \quad (\text{momentum } \mu > 0) \\
    \theta_t &\leftarrow \theta_{t-1} - \gamma g_t / d_t \quad (\text{otherwise})

Hinton, Srivastava & Swersky, Neural Networks for Machine Learning, lecture 6e (2012); Graves,
"Generating Sequences With Recurrent Neural Networks" (2013) for the centered form. State keys as
torch.optim: ``step``, ``square_avg``, ``momentum_buffer`` (momentum > 0), ``grad_avg`` (centered).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import Tensor
from torch.optim.rmsprop import rmsprop as _torch_rmsprop

from optimist.optim.base import (
    ParamsT,
    check_unit_interval,
    init_arguments,
    scalar,
)
from optimist.optim.engine import RuleOptimizer
from optimist.optim.rule import Rule, ScalarState, Slot
from optimist.optim.transforms import ChainConfig

__all__ = ["RMSPROP", "RMSprop"]


def _scalars(group: Any, t: float, _: ScalarState) -> tuple[float, ...]:
    alpha = group["alpha"]
    return (alpha, 1 - alpha, group["eps"], group["momentum"], -scalar(group["lr"]))


def _eager(p: Tensor, g: Tensor, s: list, h: Sequence[float], flags: Sequence[bool]) -> None:
    alpha, one_minus_alpha, eps, momentum, neg_lr = h
    v, g_avg, buf = s
    v.mul_(alpha).addcmul_(g, g, value=one_minus_alpha)  # v = a v + (1 - a) g^2
    if flags[0]:  # centered
        g_avg.lerp_(g, one_minus_alpha)  # g_avg = a g_avg + (1 - a) g
        denom = v.addcmul(g_avg, g_avg, value=-1).sqrt_().add_(eps)
    else:
        denom = v.sqrt().add_(eps)
    if flags[1]:  # momentum
        buf.mul_(momentum).addcdiv_(g, denom)  # b = mu b + g / d
        p.add_(buf, alpha=neg_lr)
    else:
        p.addcdiv_(g, denom, value=neg_lr)


RMSPROP = Rule(
    name="rmsprop",
    slots=(
        Slot("square_avg"),
        Slot("grad_avg", when=lambda g: g["centered"]),
        Slot("momentum_buffer", when=lambda g: g["momentum"] > 0),
    ),
    scalars=_scalars,
    eager=_eager,
    flags=lambda g: (bool(g["centered"]), g["momentum"] > 0),
    torch_foreach=_torch_rmsprop,
)


class RMSprop(RuleOptimizer):
    """RMSprop: a drop-in ``torch.optim.RMSprop``.

    Args:
        params: parameters or param groups.
        lr: learning rate :math:`\\gamma` (default 1e-2).
        alpha: :math:`\\alpha`, the smoothing constant of the squared-gradient average, in [0, 1].
        eps: :math:`\\epsilon` added to the denominator.
        weight_decay: :math:`\\lambda`, an L2 penalty added to the gradient.
        momentum: :math:`\\mu` (default 0).
        centered: normalise by an estimate of the gradient's variance instead of its second
            moment.
        maximize, foreach, fused, capturable, differentiable, skip_nonfinite, state_dtype,
            stochastic_params, chain: see :class:`~optimist.optim.Optimizer`.
    """

    rule = RMSPROP
    nonnegative = ("eps", "weight_decay", "momentum")
    examples = ({"lr": 0.01, "centered": True, "momentum": 0.5, "weight_decay": 0.01},)

    def __init__(
        self,
        params: ParamsT,
        lr: float | Tensor = 1e-2,
        alpha: float = 0.99,
        eps: float = 1e-8,
        weight_decay: float = 0,
        momentum: float = 0,
        centered: bool = False,
        capturable: bool = False,
        foreach: bool | None = None,
        maximize: bool = False,
        differentiable: bool = False,
        *,
        fused: bool | None = None,
        skip_nonfinite: bool = False,
        state_dtype: str | None = None,
        stochastic_params: bool = False,
        chain: ChainConfig | None = None,
    ) -> None:
        super().__init__(**init_arguments(locals()))

    def _check_group(self, group: dict[str, Any]) -> None:
        self._check_common(group)
        check_unit_interval("alpha", group["alpha"], closed=True)
