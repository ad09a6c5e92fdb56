r"""LAMB and LARS: layer-wise trust ratios :math:`\lVert\theta\rVert / \lVert u\rVert` per tensor.

.. math::

    \text{LAMB:}\quad u_t &= \frac{m_t / (1 - \beta_1^t)}{\sqrt{v_t / (1 - \beta_2^t)} + \epsilon}
        + \lambda\theta_{t-1}, \qquad
    \theta_t = \theta_{t-1} - \gamma\, r_t u_t \\
    \text{LARS:}\quad u_t &= g_t + \lambda\theta_{t-1}, \qquad
    b_t = \mu b_{t-1} + \gamma\, \eta r_t u_t, \qquad
    \theta_t = \theta_{t-1} - b_t \ (\text{Nesterov: } \gamma\eta r_t u_t + \mu b_t)

with :math:`r_t = \lVert\theta_{t-1}\rVert / (\lVert u_t\rVert + \epsilon_r)`, and 1 where either
norm is 0. You et al., "Large Batch Optimization for Deep Learning: Training BERT in 76 minutes"
(2019), Algorithm 2 (LAMB, with :math:`\phi` the identity), and You, Gitman & Ginsburg, "Large
Batch Training of Convolutional Networks" (2017), Algorithm 1 (LARS, trust coefficient
:math:`\eta`, momentum on the scaled update), in Optax's conventions (``optax.lamb``,
``optax.lars``: tested against both, and against ``optimist.reference``): LAMB's epsilon outside
the square root, default 1e-6; LARS's momentum accumulates the learning-rate-scaled update. The
trust ratio needs the norm of the whole update before any element is written, so these run in
torch ops per tensor: one pass for the moments and the update, a second for the norms and the
write (not the fused engine). State: LAMB ``step``, ``exp_avg``, ``exp_avg_sq``; LARS
``momentum_buffer``. Weight decay is excluded from nothing by default; mask biases and norms
with per-group ``weight_decay=0``.

Distributed: under ``ZeroRedundancyOptimizer`` each tensor is whole on one rank. Under FSDP2
(DTensor parameters) the moments are sharded like the parameter and updated on the local
shards; the two norms of each trust ratio are those of the whole tensors, from local sums of
squares all-reduced in one collective per tensor (:func:`optimist.optim.distributed.global_norms`).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from optimist.optim.base import (
    ParamsT,
    check_betas,
    check_flag,
    check_nonnegative,
    new_step_tensor,
    scalar,
)
from optimist.optim.distributed import global_norms, local, local_grad
from optimist.optim.tensorwise import TensorwiseOptimizer

__all__ = ["LAMB", "LARS", "trust_ratio"]


def trust_ratio(
    param: Tensor,
    update: Tensor,
    coefficient: float = 1.0,
    eps: float = 0.0,
    layout: Tensor | None = None,
) -> float:
    """``coefficient * ||param|| / (||update|| + eps)``, or 1 if either norm is 0 (as Optax).

    ``layout``: the DTensor parameter whose local shards ``param`` and ``update`` are; the
    norms are then those of the whole tensors (all-reduced, the same on every rank).
    """
    p_norm, u_norm = global_norms([param, update], param if layout is None else layout)
    if p_norm == 0.0 or u_norm == 0.0:
        return 1.0
    return coefficient * p_norm / (u_norm + eps)


def _grad(p: Tensor, group: dict[str, Any], name: str) -> Tensor:
    """``p``'s gradient (negated to maximize), its local shard for a DTensor ``p``."""
    if p.is_complex() or p.grad.is_sparse:
        raise RuntimeError(f"{name} does not support complex parameters or sparse gradients")
    g = local_grad(p.grad, p)
    return -g if group["maximize"] else g


class LAMB(TensorwiseOptimizer):
    """LAMB (You et al. 2019); see the module docstring.

    Args:
        params: parameters or param groups.
        lr: learning rate :math:`\\gamma` (default 1e-3).
        betas: :math:`(\\beta_1, \\beta_2)`.
        eps: :math:`\\epsilon` added to the denominator (default 1e-6, as Optax).
        weight_decay: :math:`\\lambda`, added to the update before the trust ratio.
        maximize: ascend instead of descend.
        skip_nonfinite: see :class:`~optimist.optim.base.Optimizer`.
    """

    def __init__(
        self,
        params: ParamsT,
        lr: float | Tensor = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-6,
        weight_decay: float = 0.0,
        *,
        maximize: bool = False,
        skip_nonfinite: bool = False,
    ) -> None:
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, maximize=maximize)
        super().__init__(params, defaults, skip_nonfinite=skip_nonfinite)

    def _check_group(self, group: dict[str, Any]) -> None:
        self._check_common(group)
        check_betas(group["betas"])
        check_nonnegative("eps", group["eps"])
        check_nonnegative("weight_decay", group["weight_decay"])

    def _step_group(self, group: dict[str, Any]) -> None:
        beta1, beta2 = (scalar(b) for b in group["betas"])
        lr, wd, eps = scalar(group["lr"]), scalar(group["weight_decay"]), group["eps"]
        for p in group["params"]:
            if p.grad is None:
                continue
            g, shard = _grad(p, group, "LAMB"), local(p)
            state = self.state[p]
            if not state:  # moments sharded like p under FSDP2
                state["step"] = new_step_tensor()
                state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["step"] += 1
            t = state["step"].item()
            m, v = local(state["exp_avg"]), local(state["exp_avg_sq"])
            m.lerp_(g, 1 - beta1)
            v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
            update = (m / (1 - beta1**t)).div_((v / (1 - beta2**t)).sqrt_().add_(eps))
            if wd != 0:
                update.add_(shard, alpha=wd)
            shard.add_(update, alpha=-lr * trust_ratio(shard, update, layout=p))


class LARS(TensorwiseOptimizer):
    """LARS (You et al. 2017); see the module docstring.

    Args:
        params: parameters or param groups.
        lr: learning rate :math:`\\gamma` (default 1.0: the trust coefficient sets the scale).
        momentum: :math:`\\mu` (default 0.9).
        weight_decay: :math:`\\lambda`, added to the gradient before the trust ratio.
        trust_coefficient: :math:`\\eta` (default 1e-3).
        eps: :math:`\\epsilon_r` added to the update norm (default 0).
        nesterov: Nesterov momentum.
        maximize: ascend instead of descend.
        skip_nonfinite: see :class:`~optimist.optim.base.Optimizer`.
    """

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
        maximize: bool = False,
        skip_nonfinite: bool = False,
    ) -> None:
        defaults = dict(
            lr=lr,
            momentum=momentum,
            weight_decay=weight_decay,
            trust_coefficient=trust_coefficient,
            eps=eps,
            nesterov=nesterov,
            maximize=maximize,
        )
        super().__init__(params, defaults, skip_nonfinite=skip_nonfinite)

    def _check_group(self, group: dict[str, Any]) -> None:
        self._check_common(group)
        for key in ("momentum", "weight_decay", "trust_coefficient", "eps"):
            check_nonnegative(key, group[key])
        check_flag("nesterov", group["nesterov"])

    def _step_group(self, group: dict[str, Any]) -> None:
        lr, wd, mu = scalar(group["lr"]), scalar(group["weight_decay"]), group["momentum"]
        for p in group["params"]:
            if p.grad is None:
                continue
            update, shard = _grad(p, group, "LARS").clone(), local(p)
            if wd != 0:
                update.add_(shard, alpha=wd)
            ratio = trust_ratio(shard, update, group["trust_coefficient"], group["eps"], p)
            update.mul_(lr * ratio)
            state = self.state[p]
            if "momentum_buffer" not in state:  # sharded like p under FSDP2
                state["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            buf = local(state["momentum_buffer"])
            buf.mul_(mu).add_(update)
            shard.sub_(update.add_(buf, alpha=mu) if group["nesterov"] else buf)
