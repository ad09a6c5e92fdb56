r"""LARS: momentum SGD on the update scaled per tensor by a trust ratio.

.. math::

    u_t = g_t + \lambda\theta_{t-1}, \qquad
    b_t = \mu b_{t-1} + \gamma\, \eta r_t u_t, \qquad
    \theta_t = \theta_{t-1} - b_t \ (\text{Nesterov: } \gamma\eta r_t u_t + \mu b_t)

with :math:`r_t = \lVert\theta_{t-1}\rVert / (\lVert u_t\rVert + \epsilon_r)`, and 1 where either
norm is 0 (:func:`~optimist.optim.trust_ratio.trust_ratio`). You, Gitman & Ginsburg, "Large Batch
Training of Convolutional Networks" (2017), Algorithm 1 (trust coefficient :math:`\eta`, momentum
on the scaled update), in Optax's conventions (``optax.lars``: tested against it, and against
``optimist.reference``): the momentum accumulates the learning-rate-scaled update. State:
``momentum_buffer``. The step's two phases (the engine's per-tensor norm pass, torch ops
elsewhere), the state's storage (``state_dtype``) and FSDP2: :mod:`optimist.optim.trust_ratio`;
the C++ functor: ``Lars`` in ``csrc/rules.h``.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from optimist.optim.base import ParamsT, check_choice, init_arguments, scalar
from optimist.optim.trust_ratio import TrustRatioOptimizer

__all__ = ["LARS"]


class LARS(TrustRatioOptimizer):
    """LARS (You et al. 2017); see the module docstring.

    Args:
        params: parameters or param groups.
        lr: learning rate :math:`\\gamma` (default 1.0: the trust coefficient sets the scale).
        momentum: :math:`\\mu` (default 0.9).
        weight_decay: :math:`\\lambda`, added to the gradient before the trust ratio.
        trust_coefficient: :math:`\\eta` (default 1e-3).
        eps: :math:`\\epsilon_r` added to the update norm (default 0).
        nesterov: Nesterov momentum.
        lr_inside_momentum: True (default; the paper's Algorithm 1 and Optax): the buffer
            accumulates the learning-rate-scaled update, :math:`b_t = \\mu b_{t-1} + \\gamma\\eta
            r_t u_t`, :math:`\\theta_t = \\theta_{t-1} - b_t`; False (torch SGD's and
            ``pytorch_optimizer``'s form): :math:`b_t = \\mu b_{t-1} + \\eta r_t u_t`,
            :math:`\\theta_t = \\theta_{t-1} - \\gamma b_t`. The same while the learning rate
            is constant; a schedule acts at once on the whole step in the second form.
        trust_ratio_form: "optax" (default; ``optax.lars``): :math:`r_t = \\eta\\lVert\\theta
            \\rVert / (\\lVert g_t + \\lambda\\theta\\rVert + \\epsilon_r)`; "paper" (the
            paper's Algorithm 1 and ``pytorch_optimizer``): :math:`r_t = \\eta\\lVert\\theta
            \\rVert / (\\lVert g_t\\rVert + \\lambda\\lVert\\theta\\rVert +
            \\epsilon_r)`, 1 where :math:`\\lVert\\theta\\rVert` or the denominator is 0.
        maximize, foreach, skip_nonfinite, state_dtype: see
            :class:`~optimist.optim.trust_ratio.TrustRatioOptimizer`.
    """

    nonnegative = ("momentum", "weight_decay", "trust_coefficient", "eps")
    examples = (
        {"lr": 1.0, "weight_decay": 0.01, "nesterov": True},
        {"lr": 0.5, "momentum": 0.5, "eps": 1e-3, "maximize": True},
        {"lr": 0.5, "weight_decay": 0.01, "nesterov": True, "lr_inside_momentum": False},
        {"lr": 1.0, "weight_decay": 0.1, "trust_ratio_form": "paper"},
    )
    functor = "lars"
    slot_keys = ("momentum_buffer",)

    def __init__(
        self,
        params: ParamsT,
        lr: float | Tensor = 1.0,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        trust_coefficient: float = 1e-3,
        eps: float = 0.0,
        nesterov: bool = False,
        *,
        lr_inside_momentum: bool = True,
        trust_ratio_form: str = "optax",
        maximize: bool = False,
        foreach: bool | None = None,
        skip_nonfinite: bool = False,
        state_dtype: str | None = None,
    ) -> None:
        super().__init__(**init_arguments(locals()))

    def _flags(self, group: dict[str, Any]) -> list[bool]:
        return [bool(group["nesterov"])]

    def _check_group(self, group: dict[str, Any]) -> None:
        super()._check_group(group)
        check_choice("trust_ratio_form", group.get("trust_ratio_form"), ("optax", "paper"))

    def _hyper(self, group: dict[str, Any], t: float) -> list[float]:
        outside = -1.0 if group["lr_inside_momentum"] else -scalar(group["lr"])
        wd = scalar(group["weight_decay"])
        in_norm = wd if group["trust_ratio_form"] == "optax" else 0.0
        return [wd, group["momentum"], outside, in_norm]

    def _norm_decay(self, group: dict[str, Any]) -> float:
        return 0.0 if group["trust_ratio_form"] == "optax" else scalar(group["weight_decay"])

    def _normed(self, group: dict[str, Any], g: Tensor, update: Tensor) -> Tensor:
        return update if group["trust_ratio_form"] == "optax" else g

    def _ratio_terms(self, group: dict[str, Any]) -> tuple[float, float, float]:
        inside = scalar(group["lr"]) if group["lr_inside_momentum"] else 1.0
        return inside, group["trust_coefficient"], group["eps"]

    def _update(
        self, group: dict[str, Any], g: Tensor, shard: Tensor, slots: list[Tensor], t: float
    ) -> Tensor:
        update, wd = g.clone(), scalar(group["weight_decay"])
        if wd != 0:
            update.add_(shard, alpha=wd)
        return update

    def _apply(
        self, group: dict[str, Any], shard: Tensor, update: Tensor, slots: list[Tensor],
        scale: float | Tensor,
    ) -> None:  # fmt: skip
        update.mul_(scale)
        (buf,) = slots
        buf.mul_(group["momentum"]).add_(update)
        step = update.add_(buf, alpha=group["momentum"]) if group["nesterov"] else buf
        if group["lr_inside_momentum"]:
            shard.sub_(step)
        else:  # one rounding, as the engine's fused multiply-add
            shard.add_(step, alpha=-scalar(group["lr"]))
