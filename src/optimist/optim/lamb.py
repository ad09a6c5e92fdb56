r"""LAMB: Adam's update scaled per tensor by a trust ratio.

.. math::

    u_t = \frac{m_t / (1 - \beta_1^t)}{\sqrt{v_t / (1 - \beta_2^t)} + \epsilon}
        + \lambda\theta_{t-1}, \qquad
    \theta_t = \theta_{t-1} - \gamma\, r_t u_t

with :math:`r_t = \lVert\theta_{t-1}\rVert / \lVert u_t\rVert`, and 1 where either norm is 0
(:func:`~optimist.optim.trust_ratio.trust_ratio`). You et al., "Large Batch Optimization for Deep
Learning: Training BERT in 76 minutes" (2019), Algorithm 2 (with :math:`\phi` the identity), in
Optax's conventions (``optax.lamb``: tested against it, and against ``optimist.reference``):
epsilon outside the square root, default 1e-6. State: ``step``, ``exp_avg``, ``exp_avg_sq``.
The step's two phases (the engine's per-tensor norm pass, torch ops elsewhere), the state's
storage (``state_dtype``) and FSDP2: :mod:`optimist.optim.trust_ratio`; the C++ functor:
``Lamb`` in ``csrc/rules.h``.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from optimist.optim.base import ParamsT, init_arguments, new_step_tensor, scalar
from optimist.optim.trust_ratio import TrustRatioOptimizer

__all__ = ["LAMB"]


class LAMB(TrustRatioOptimizer):
    """LAMB (You et al. 2019); see the module docstring.

    Args:
        params: parameters or param groups.
        lr: learning rate :math:`\\gamma` (default 1e-3).
        betas: :math:`(\\beta_1, \\beta_2)`.
        eps: :math:`\\epsilon` added to the denominator (default 1e-6, as Optax).
        weight_decay: :math:`\\lambda`, added to the update before the trust ratio.
        maximize, foreach, skip_nonfinite, state_dtype: see
            :class:`~optimist.optim.trust_ratio.TrustRatioOptimizer`.
    """

    nonnegative = ("eps", "weight_decay")
    examples = ({"lr": 0.01, "weight_decay": 0.1}, {"lr": 0.01, "maximize": True})
    functor = "lamb"
    slot_keys = ("exp_avg", "exp_avg_sq")
    grad_in_update = False
    has_step = True

    def __init__(
        self,
        params: ParamsT,
        lr: float | Tensor = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-6,
        weight_decay: float = 0.0,
        *,
        maximize: bool = False,
        foreach: bool | None = None,
        skip_nonfinite: bool = False,
        state_dtype: str | None = None,
    ) -> None:
        super().__init__(**init_arguments(locals()))

    def _init_state(self, p: Tensor, state: dict[str, Any], group: dict[str, Any]) -> None:
        state["step"] = new_step_tensor()
        super()._init_state(p, state, group)

    def _hyper(self, group: dict[str, Any], t: float) -> list[float]:
        beta1, beta2 = (scalar(b) for b in group["betas"])
        wd, eps = scalar(group["weight_decay"]), group["eps"]
        return [1 - beta1, beta2, 1 - beta2, 1 / (1 - beta1**t), 1 / (1 - beta2**t), eps, wd]

    def _ratio_terms(self, group: dict[str, Any]) -> tuple[float, float, float]:
        return -scalar(group["lr"]), 1.0, 0.0

    def _update(
        self, group: dict[str, Any], g: Tensor, shard: Tensor, slots: list[Tensor], t: float
    ) -> Tensor:
        beta1, beta2 = (scalar(b) for b in group["betas"])
        m, v = slots
        m.lerp_(g, 1 - beta1)
        v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
        return self._direction(group, shard, slots, t)

    def _direction(
        self, group: dict[str, Any], shard: Tensor, slots: list[Tensor], t: float
    ) -> Tensor:
        beta1, beta2 = (scalar(b) for b in group["betas"])
        wd, eps = scalar(group["weight_decay"]), group["eps"]
        m, v = slots
        # the bias corrections as multiplications by their reciprocals (one division per element)
        update = (m * (1 / (1 - beta1**t))).div_((v * (1 / (1 - beta2**t))).sqrt_().add_(eps))
        if wd != 0:
            update.add_(shard, alpha=wd)
        return update

    def _apply(
        self, group: dict[str, Any], shard: Tensor, update: Tensor, slots: list[Tensor],
        scale: float | Tensor,
    ) -> None:  # fmt: skip
        if isinstance(scale, Tensor):  # rounds as add_(alpha=) does (one fused multiply-add)
            shard.addcmul_(update, scale)
        else:
            shard.add_(update, alpha=scale)
